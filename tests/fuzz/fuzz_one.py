"""Runs one fuzz target under atheris (libFuzzer); `run.py` starts one of these per target.

    python tests/fuzz/fuzz_one.py --kind bm25 --findings DIR CORPUS_DIR -max_total_time=60

Arguments after the options go to libFuzzer. A `Finding` raised by the target (an exception
the loader or analyzer must not raise) is written to DIR as finding-<hash>.bin with a .txt
that holds the message, and fuzzing goes on; a hard crash (signal) or a timeout ends the
process and libFuzzer writes the input (give -artifact_prefix=DIR/). The number of executions
is written to DIR/execs-<kind>-<pid> every 500 runs and at exit.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import sys
import traceback
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harnesses


def _instrument_fastrag() -> int:
    """Python coverage of fastrag for libFuzzer: every function and method of the loaded
    fastrag modules instrumented in place. (instrument_imports() misses fastrag, which the
    editable install imports through a custom loader, and instrument_all() takes minutes;
    without coverage libFuzzer keeps no seed and mutates a 1-byte input, which run.py
    checks.) The C++ core is not instrumented: that needs a sanitizer build."""
    import inspect

    done = 0
    for name, module in list(sys.modules.items()):
        if not (name == "fastrag" or name.startswith("fastrag.")) or module is None:
            continue
        for obj in list(vars(module).values()):
            targets = []
            if inspect.isfunction(obj) and obj.__module__ == name:
                targets.append(obj)
            elif inspect.isclass(obj) and obj.__module__ == name:
                for attr in vars(obj).values():
                    attr = getattr(attr, "__func__", attr)  # staticmethod / classmethod
                    if isinstance(attr, property):
                        targets += [f for f in (attr.fget, attr.fset) if f is not None]
                    elif inspect.isfunction(attr):
                        targets.append(attr)
            for f in targets:
                try:
                    atheris.instrument_func(f)
                    done += 1
                except Exception:  # e.g. a function already instrumented through another name
                    pass
    return done


_instrument_fastrag()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", required=True, choices=sorted(harnesses.TARGETS))
    ap.add_argument("--findings", required=True, type=Path)
    args, libfuzzer_args = ap.parse_known_args()
    target = harnesses.TARGETS[args.kind]
    args.findings.mkdir(parents=True, exist_ok=True)
    stats = args.findings / f"execs-{args.kind}-{__import__('os').getpid()}"
    execs = 0
    seen: set[str] = set()

    def write_stats() -> None:
        stats.write_text(str(execs))

    atexit.register(write_stats)

    def one_input(data: bytes) -> None:
        nonlocal execs
        execs += 1
        if execs % 500 == 0:
            write_stats()
        try:
            target(data)
        except harnesses.Finding as e:
            # one file per distinct message head (the exception type and where it comes from)
            cause = e.__cause__ or e
            tb = traceback.extract_tb(cause.__traceback__)
            where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else ""
            key = f"{type(cause).__name__} {where} {str(e).split(':')[0]}"
            digest = hashlib.sha1(data).hexdigest()[:16]
            if key not in seen:
                seen.add(key)
                (args.findings / f"finding-{args.kind}-{digest}.bin").write_bytes(data)
                (args.findings / f"finding-{args.kind}-{digest}.txt").write_text(
                    f"{key}\n{e}\n\n{''.join(traceback.format_exception(cause))}"
                )
                print(f"FINDING {args.kind}: {e}", file=sys.stderr, flush=True)

    mutator = harnesses.MUTATORS.get(args.kind)
    options = {"custom_mutator": mutator} if mutator else {}
    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input, **options)
    try:
        atheris.Fuzz()
    finally:
        harnesses.cleanup()


if __name__ == "__main__":
    main()
