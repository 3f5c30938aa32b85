"""Code that runs INSIDE a judge worker process (see `pool.py`).

The parent never imports math-verify; only workers do. A worker:
- caps its own address space (RLIMIT_AS), so a hostile answer such as `10^{10^{10}}` fails with
  MemoryError instead of eating the machine;
- disables sympy's string-eval entry point (`sympy.parsing.sympy_parser.eval_expr`, which
  `parse_expr` / `sympify(str)` use): the judging path only uses math-verify's LaTeX parser (an
  ANTLR grammar building sympy objects), so model text is never handed to Python's `eval`;
- refuses (audit hook, PEP 578) compiling any string except where the calling frame is the
  libraries' own code generation (sympy's run-time polynomial code, dataclasses, namedtuple) and
  not one of the modules that compile strings they are given (sympy's parsers, lambdify): so
  sympy simplifications that generate code work, eval/exec of model text does not. A refusal
  inside math-verify (which swallows errors as "not equivalent") is reported as
  status "error:EvalRefused", counted as a parse failure;
- arms a soft wall-clock alarm (`setitimer`, a BaseException so library `except Exception` blocks
  cannot swallow it) for each judgement. The parent's hard limit, enforced by killing this process,
  is the backstop for C-level work the alarm cannot interrupt (big-integer arithmetic).

Messages (parent -> worker over a Pipe): `("judge", job_id, pred, gold, soft_timeout_s)`,
`("selfcheck", job_id)`, `None` (exit). Replies: `(job_id, equivalent: bool, status: str)` with
status "ok" | "timeout" | "parse_failure" | "error:<ExceptionName>", or `(job_id, dict)` for
selfcheck.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import sys

__all__ = ["worker_main", "judge_in_process", "install_guards"]


class SoftTimeout(BaseException):
    """Raised by the worker's own alarm; BaseException so `except Exception` does not catch it."""


class EvalRefused(RuntimeError):
    """Raised instead of evaluating a string as Python code / performing a side effect."""


# sympy's parse_expr (reached through `sympy.Number(text)` / `sympify(text)`) evals a transformed
# copy of its input. latex2sympy2_extended calls `sympy.Number(token)` for the grammar's NUMBER
# tokens, so that single path stays open, and only for plain numeric literals.
_NUMERIC_LITERAL = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")
_MAX_NUMERIC_LITERAL_CHARS = 4000
_compile_allowed = 0
_real_parse_expr = None
_guards_installed = False

# audit events that are side effects no judgement needs (PEP 578 event names)
_DENIED_EVENTS = frozenset(
    {
        "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
        "os.forkpty", "os.kill", "os.killpg", "socket.connect", "socket.bind", "socket.sendto",
        "os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.symlink", "os.link", "os.truncate",
        "os.chmod", "os.chown", "os.putenv", "os.unsetenv", "shutil.rmtree", "shutil.copyfile",
        "shutil.move", "ctypes.dlopen", "urllib.Request", "webbrowser.open", "pty.spawn",
    }
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _safe_parse_expr(s, *args, **kwargs):
    global _compile_allowed
    if isinstance(s, str) and len(s) <= _MAX_NUMERIC_LITERAL_CHARS and _NUMERIC_LITERAL.fullmatch(s):
        _compile_allowed += 1
        try:
            return _real_parse_expr(s, *args, **kwargs)
        finally:
            _compile_allowed -= 1
    raise EvalRefused(f"siren_verl reward worker: parse_expr refused a non-numeric string ({len(s)} chars)")


# Library code generation (docs/methods.md §9: the library's own code generation runs, model text
# never does). sympy compiles part of its polynomial code at run time (`MonomialOps._build` in
# sympy/polys/monomials.py execs a template filled with integers) and the standard library builds
# classes from templates (dataclasses, collections.namedtuple, typing). A `compile` is allowed when
# the frame calling compile()/exec()/eval() is such library code. Excluded: the modules that turn
# STRINGS THEY ARE GIVEN into code - sympy's parsers (`parse_expr`'s `eval_expr`, which
# `sympify(str)` reaches), `lambdify` (prints expressions, i.e. names taken from the answer, into
# source), the matchpy connector, plotting's lambdify, sympy's debug switch, the polys config, and
# sympy.physics. Model text reaches code only through those, so it is never executed; the guard test
# in tests/reward/test_hostile.py feeds it to every sink and checks each is refused.
_TRUSTED_CODEGEN_DIRS: tuple[str, ...] = ()
_TRUSTED_CODEGEN_FILES: frozenset[str] = frozenset()
_UNTRUSTED_SYMPY_PARTS = (
    "parsing/",
    "utilities/lambdify.py",
    "utilities/matchpy_connector.py",
    "plotting/",
    "physics/",
    "polys/polyconfig.py",
    "__init__.py",  # sympy/__init__.py itself (an exact match; sub-packages' __init__ are fine)
)
_refusals = 0  # EvalRefused raised in this process (a judgement that hit a guard is not "different")


def _init_trusted_codegen() -> None:
    global _TRUSTED_CODEGEN_DIRS, _TRUSTED_CODEGEN_FILES
    import collections
    import dataclasses
    import typing

    import sympy

    _TRUSTED_CODEGEN_DIRS = (os.path.dirname(os.path.realpath(sympy.__file__)) + os.sep,)
    _TRUSTED_CODEGEN_FILES = frozenset(
        os.path.realpath(m.__file__) for m in (collections, dataclasses, typing)
    )


@functools.lru_cache(maxsize=1024)
def _is_trusted_codegen_file(filename: str) -> bool:
    path = os.path.realpath(filename)
    if path in _TRUSTED_CODEGEN_FILES:
        return True
    for root in _TRUSTED_CODEGEN_DIRS:
        if path.startswith(root):
            rel = path[len(root) :].replace(os.sep, "/")
            return not any(
                rel == part or (part.endswith("/") and rel.startswith(part)) for part in _UNTRUSTED_SYMPY_PARTS
            )
    return False


def _compile_caller_trusted() -> bool:
    """Whether the Python frame that called compile()/exec()/eval() is library code generation.
    Frame 0 is this function, 1 the audit hook, 2 the caller of the builtin."""
    try:
        frame = sys._getframe(2)
    except ValueError:
        return False
    return _is_trusted_codegen_file(frame.f_code.co_filename)


def _refuse(message: str) -> EvalRefused:
    global _refusals
    _refusals += 1
    return EvalRefused(message)


def _audit_hook(event: str, args: tuple) -> None:
    if not _guards_installed:
        return
    if event == "compile":
        # compile() of a source string: eval/exec of text. Importing a .py file names a real path.
        filename = args[1] if len(args) > 1 else None
        if _compile_allowed or (isinstance(filename, str | bytes) and not str(filename).startswith("<")):
            return
        if _compile_caller_trusted():
            return
        raise _refuse("siren_verl reward worker: compiling a string is disabled")
    if event in _DENIED_EVENTS:
        raise _refuse(f"siren_verl reward worker: {event} is disabled")
    if event == "open":
        mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        ):
            raise _refuse(f"siren_verl reward worker: opening {args[0]!r} for writing is disabled")


def install_guards() -> None:
    """Confine this process (defence in depth, see module doc); irreversible by design.

    1. sympy's `parse_expr` accepts only numeric literals (wherever it was imported by name);
    2. an audit hook (PEP 578) refuses compiling strings outside that path and outside library
       code generation (`_is_trusted_codegen_file`), so eval/exec of text fails, and refuses the
       side effects listed in `_DENIED_EVENTS` and opening files for writing.
    """
    global _real_parse_expr, _guards_installed
    if _guards_installed:
        return
    import sympy.parsing
    import sympy.parsing.sympy_parser as sympy_parser

    _real_parse_expr = sympy_parser.parse_expr
    sympy_parser.parse_expr = _safe_parse_expr
    sympy.parsing.parse_expr = _safe_parse_expr
    for module_name in ("math_verify.parser", "latex2sympy2_extended.latex2sympy2"):
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, "parse_expr", None) is _real_parse_expr:
            module.parse_expr = _safe_parse_expr
    _init_trusted_codegen()
    sys.addaudithook(_audit_hook)
    _guards_installed = True


# Answers touching each code path once, so lazy imports and class creation (dataclasses compile
# strings) happen before the guards go up. Run once in the zygote (pool.py), which forks the workers.
_WARMUP_PAIRS = (
    ("\\frac{1}{2}", "0.5"),
    ("(0,1]", "[0,1)"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"),
    ("A", "(B)"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
    ("y=2x+1", "2x+1"),
    ("50\\%", "0.5"),
    ("3\\pi", "9.42477796"),
    ("x \\in (1, 2)", "1 < x < 2"),
    ("\\log_2 8", "3"),
    ("\\sin(\\pi/6)", "1/2"),
    ("30^\\circ", "\\frac{\\pi}{6}"),
    ("1,2,3", "\\{1,2,3\\}"),
    ("\\text{(C)}", "C"),
    ("-\\infty", "(-\\infty, 0)"),
    ("1+i", "i+1"),
)
_warmed = False


def warm_up() -> None:
    global _warmed
    if _warmed:
        return
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    for pred, gold in _WARMUP_PAIRS:
        try:
            judge_in_process(pred, gold)
        except Exception:
            pass
    _warmed = True


def _limit_memory(max_bytes: int | None) -> None:
    if not max_bytes:
        return
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            max_bytes = min(max_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - platform without RLIMIT_AS
        pass


@functools.lru_cache(maxsize=1)
def _latex_config():
    from math_verify import LatexExtractionConfig

    # The answer is already isolated by `extract_answer`; `math_verify_input` wraps it so the box
    # rule (highest priority) picks exactly it. No ExprExtractionConfig: that path calls parse_expr.
    return (LatexExtractionConfig(boxed_match_priority=0),)


def _parse_answer(answer: str):
    from math_verify import parse

    from siren_verl.reward.normalize import math_verify_input

    return parse(math_verify_input(answer), _latex_config(), parsing_timeout=None)


@functools.lru_cache(maxsize=4096)
def _parse_gold_cached(gold: str):
    # gold answers repeat across the n samples of a prompt: parse each once per worker
    return _parse_answer(gold)


def judge_in_process(pred: str, gold: str) -> tuple[bool, str]:
    """math-verify equivalence of two bare answers (no time limit here: callers bound it)."""
    from math_verify import verify

    refusals_before = _refusals
    gold_parsed = _parse_gold_cached(gold)
    pred_parsed = _parse_answer(pred)
    if not gold_parsed or not pred_parsed:
        return False, "parse_failure"
    equivalent = bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    if not equivalent and _refusals != refusals_before:
        # a guard refused something inside math-verify, which swallows errors as "different":
        # report it (counted as a parse failure), never as a judged mismatch
        return False, "error:EvalRefused"
    # math-verify falls back to the raw string when its LaTeX parser fails; a string-only side
    # that does not match is a parse failure, not a judged mismatch
    if not equivalent and not (_has_math_object(gold_parsed) and _has_math_object(pred_parsed)):
        return False, "parse_failure"
    return equivalent, "ok"


def _has_math_object(parsed: list) -> bool:
    return any(not isinstance(x, str) for x in parsed)


def _on_alarm(signum, frame):
    raise SoftTimeout()


def _refused(fn) -> bool:
    try:
        fn()
    except EvalRefused:
        return True
    except Exception:
        return False
    return False


def _library_codegen_runs() -> bool:
    """sympy's run-time code generation (monomial arithmetic for a number of generators no
    warm-up used) works under the guards, and a two-variable simplification that needs it too."""
    import sympy
    from sympy.polys.monomials import MonomialOps

    try:
        mul = MonomialOps(17).mul()
        x, y = sympy.symbols("x y")
        simplified = sympy.simplify(sympy.tan(y) ** 2 + 1 - 1 / sympy.cos(y) ** 2 + x**2 / 4 - x**2 / 4)
    except EvalRefused:
        return False
    return mul((1,) * 17, (2,) * 17) == (3,) * 17 and simplified == 0


def _selfcheck() -> dict:
    """Probe the guards from inside the worker (tests and `siren-verl doctor` use this)."""
    import resource

    import sympy
    import sympy.parsing.sympy_parser as sympy_parser
    from sympy.parsing.sympy_parser import parse_expr

    return {
        "pid": os.getpid(),
        "parse_expr_refuses_code": _refused(lambda: parse_expr("__import__('os')")),
        "sympify_refuses_code": _refused(lambda: sympy.sympify("x + __import__('os').getpid()")),
        "eval_refused": _refused(lambda: eval("1 + 1")),  # noqa: S307 - probing the guard
        "system_refused": _refused(lambda: os.system("true")),
        "write_refused": _refused(lambda: open(os.devnull, "w")),  # noqa: SIM115
        "numbers_still_parse": sympy.Number("12") == 12 and float(sympy.Number("2.5")) == 2.5,
        "sympy_eval_expr_refuses_code": _refused(
            lambda: sympy_parser.eval_expr("__import__('os').getpid()", {}, {})
        ),
        "lambdify_refused": _refused(lambda: sympy.lambdify(sympy.Symbol("x"), sympy.Symbol("x") + 1)),
        "library_codegen_runs": _library_codegen_runs(),
        "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0],
    }


def _resolve_judge(judge_spec: str | None, extra_sys_path: tuple[str, ...]):
    """`judge_in_process`, or the `"module:function"` named by `judge_spec` (tests inject slow
    judges this way; the function takes (pred, gold) and returns (equivalent, status))."""
    if judge_spec is None:
        return judge_in_process
    import importlib
    import sys

    for p in extra_sys_path:
        if p not in sys.path:
            sys.path.insert(0, p)
    module_name, _, attr = judge_spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def zygote_main(ctl_fd: int, config_json: str) -> None:
    """The judge pool's helper process (see `pool.py`): import and warm up math-verify once, then
    fork one worker per request. Request: one byte on the control socket carrying a pipe end
    (SCM_RIGHTS); reply: the worker's pid (8 bytes). Exits when the socket closes."""
    import json
    import socket
    import struct
    from multiprocessing.connection import Connection

    config = json.loads(config_json)
    ctl = socket.socket(fileno=ctl_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the caller's terminal: the caller decides
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped automatically (no zombies)
    extra = tuple(config.get("extra_sys_path") or ())
    _resolve_judge(config.get("judge_spec"), extra)  # import an injected judge once, here
    warm_up()
    ctl.sendall(b"R")
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 1, 4)
        except OSError:
            return
        if not msg:
            return
        if not fds:
            continue
        for extra_fd in fds[1:]:
            os.close(extra_fd)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                ctl.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                worker_main(Connection(fds[0]), config.get("max_memory_bytes"), config.get("judge_spec"), extra)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(fds[0])
        try:
            ctl.sendall(struct.pack("!q", pid))
        except OSError:
            return


def worker_main(
    conn, max_memory_bytes: int | None, judge_spec: str | None = None, extra_sys_path: tuple[str, ...] = ()
) -> None:
    """Serve judgement requests on `conn` until told to stop or the pipe closes."""
    judge = _resolve_judge(judge_spec, extra_sys_path)
    warm_up()  # no-op when the zygote already did it
    _limit_memory(max_memory_bytes)
    install_guards()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError, SoftTimeout):
            return
        if msg is None:
            return
        kind, job_id = msg[0], msg[1]
        if kind == "selfcheck":
            conn.send((job_id, _selfcheck()))
            continue
        _, _, pred, gold, soft_timeout_s = msg
        try:
            try:
                signal.setitimer(signal.ITIMER_REAL, soft_timeout_s)
                equivalent, status = judge(pred, gold)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except SoftTimeout:
            equivalent, status = False, "timeout"
        except BaseException as exc:  # MemoryError, RecursionError, parser bugs: never fatal
            equivalent, status = False, f"error:{type(exc).__name__}"
        try:
            conn.send((job_id, equivalent, status))
        except (OSError, SoftTimeout):
            return
