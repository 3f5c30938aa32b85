import sys

from siren_verl.cli.main import main

sys.exit(main())
