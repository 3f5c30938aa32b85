"""docker/Dockerfile's base image and verl pin agree with the verl version siren-verl pins.

verl tags its vLLM images `verlai/verl:vllm<MMM>.<build>` after the vLLM release they carry
(`vllm024` = vLLM 0.24). The base must carry the vLLM that verl's own `vllm` extra pins for the
verl version of pyproject.toml, and the Dockerfile must install exactly that verl.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"


def dockerfile_args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)\s*$", text, flags=re.MULTILINE))


def pyproject_pin(name: str, extra: str | None = None) -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    pins = [Requirement(r) for r in reqs if Requirement(r).name == name]
    assert len(pins) == 1, f"expected one {name} requirement in pyproject ({extra or 'dependencies'})"
    (spec,) = pins[0].specifier
    assert spec.operator == "==", f"{name} must be pinned with == in pyproject"
    return spec.version


def vllm_of_verl_image(image: str) -> str:
    """`verlai/verl:vllm024.dev2` -> "0.24"."""
    match = re.fullmatch(r"verlai/verl:vllm(\d)(\d+)\.[\w.-]+", image)
    assert match, f"{image}: not one of verl's vLLM images (verlai/verl:vllm<MMM>.<build>)"
    return f"{match.group(1)}.{int(match.group(2))}"


def test_tag_parser():
    assert vllm_of_verl_image("verlai/verl:vllm024.dev2") == "0.24"
    assert vllm_of_verl_image("verlai/verl:vllm017.latest") == "0.17"
    assert vllm_of_verl_image("verlai/verl:vllm0110.dev1") == "0.110"


def test_dockerfile_builds_on_its_base_arg_and_installs_the_pinned_verl():
    text = DOCKERFILE.read_text()
    args = dockerfile_args(text)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}\s*$", text, flags=re.MULTILINE)
    assert args["VERL_VERSION"] == pyproject_pin("verl")
    assert '--no-deps "verl==${VERL_VERSION}"' in text


def test_base_image_carries_the_vllm_that_verl_pins():
    verl_version = pyproject_pin("verl")
    base_vllm = vllm_of_verl_image(dockerfile_args(DOCKERFILE.read_text())["BASE_IMAGE"])

    # the verl in this environment is the pinned one, so its metadata is the pinned verl's
    assert importlib.metadata.version("verl") == verl_version
    verl_vllm = [
        Requirement(r)
        for r in importlib.metadata.requires("verl") or []
        if Requirement(r).name == "vllm" and Requirement(r).marker and "vllm" in str(Requirement(r).marker)
    ]
    assert len(verl_vllm) == 1, "verl's `vllm` extra should pin exactly one vllm"
    (spec,) = verl_vllm[0].specifier
    assert spec.operator == "=="
    assert ".".join(spec.version.split(".")[:2]) == base_vllm

    # and siren-verl's own `gpu` extra names the same vLLM
    assert ".".join(pyproject_pin("vllm", extra="gpu").split(".")[:2]) == base_vllm
