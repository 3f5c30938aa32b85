"""`siren-verl doctor`: is this environment able to run siren-verl?

Checks, each printed as a line: python, torch (+ CUDA), verl (must be 0.9.x), the plugin loaded by
`import verl` in this process, the plugin loaded inside a Ray worker (verl swallows entry-point
errors, so this is the check that catches a broken install on a cluster), GPU, vLLM, math-verify.
Exit status: 0 when nothing required failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import platform
import sys
from dataclasses import dataclass

REQUIRED_VERL = "0.9."


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def check_verl() -> Check:
    v = _version("verl")
    if v is None:
        return Check("verl", False, "not installed (pip install verl==0.9.1)")
    if not v.startswith(REQUIRED_VERL):
        return Check("verl", False, f"{v} installed, siren-verl needs verl {REQUIRED_VERL}x (pip install verl==0.9.1)")
    return Check("verl", True, v)


def check_entry_point() -> Check:
    eps = [ep for ep in md.entry_points(group="verl.plugins") if ep.name == "siren_verl"]
    if not eps:
        return Check("entry point", False, "no `verl.plugins` entry point named siren_verl: reinstall siren-verl")
    return Check("entry point", True, eps[0].value)


def _plugin_state() -> tuple[bool, str]:
    """Import verl (which loads entry points) and ask the plugin whether it registered."""
    import verl  # noqa: F401  (loads the verl.plugins entry points)

    try:
        from siren_verl.verl_glue import plugin
    except Exception as e:  # a broken plugin must be loud here
        return False, f"siren_verl.verl_glue.plugin failed to import: {type(e).__name__}: {e}"
    if not plugin.is_registered():
        err = getattr(plugin, "registration_error", lambda: None)()
        return False, f"plugin not registered by `import verl`{': ' + err if err else ''}"
    return True, "registered by `import verl`"


def check_plugin_local() -> Check:
    ok, detail = _plugin_state()
    return Check("plugin (this process)", ok, detail)


def check_plugin_ray(timeout_s: float = 120.0) -> Check:
    try:
        import ray
    except ImportError:
        return Check("plugin (Ray worker)", False, "ray is not installed")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = False
    try:
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            import logging

            ray.init(address=address, num_cpus=None if address else 1, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
            started = True
        remote = ray.remote(num_cpus=0)(_plugin_state)
        ok, detail = ray.get(remote.remote(), timeout=timeout_s)
        return Check("plugin (Ray worker)", ok, detail)
    except Exception as e:
        return Check("plugin (Ray worker)", False, f"{type(e).__name__}: {e}")
    finally:
        if started:
            ray.shutdown()


def check_torch() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("torch", False, "not installed")]
    out = [Check("torch", True, torch.__version__)]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        out.append(Check("GPU", True, f"CUDA {torch.version.cuda}: {torch.cuda.device_count()} x {names}", False))
    else:
        out.append(Check("GPU", True, "none: the CPU path (rollout.name=hf, trainer.device=cpu) will be used", False))
    return out


def check_optional(dist: str, purpose: str) -> Check:
    v = _version(dist)
    return Check(dist, v is not None, v or f"not installed ({purpose})", required=False)


def run_checks(ray_check: bool = True) -> list[Check]:
    checks = [Check("python", sys.version_info >= (3, 10), f"{platform.python_version()} ({sys.executable})")]
    checks += check_torch()
    checks.append(check_verl())
    checks.append(check_entry_point())
    if checks[-2].ok:
        checks.append(check_plugin_local())
        if ray_check:
            checks.append(check_plugin_ray())
    checks.append(check_optional("math-verify", "needed by the math reward"))
    checks.append(check_optional("vllm", "GPU rollouts and evaluation: pip install 'siren-verl[gpu]'"))
    checks.append(check_optional("TransferQueue", "verl's default V1 trainer"))
    return checks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="siren-verl doctor", description=__doc__.split("\n\n")[0])
    p.add_argument("--no-ray", action="store_true", help="skip the check inside a Ray worker (starts a local Ray)")
    args = p.parse_args(argv)
    from siren_verl import __version__

    print(f"siren-verl {__version__} doctor")
    checks = run_checks(ray_check=not args.no_ray)
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok " if c.ok else ("FAIL" if c.required else "--  ")
        print(f"  [{mark:4}] {c.name:<{width}}  {c.detail}")
    failed = [c.name for c in checks if c.required and not c.ok]
    if failed:
        print(f"doctor: {len(failed)} required check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("doctor: all required checks passed")
    return 0
