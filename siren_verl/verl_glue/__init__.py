"""Everything that touches verl lives in this folder; a verl upgrade touches only here."""
