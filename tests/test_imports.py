"""The import structure: ``whichway --help`` and every sub-command's ``--help`` load no heavy
library (a fresh interpreter, as a user's shell starts one)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "numpy", "PIL", "diffusers", "transformers", "gradio", "ray", "lpips")


def test_help_of_every_command_imports_no_heavy_library():
    code = (
        "import contextlib, io, json, sys\n"
        "from whichway.cli import build_parser, main\n"
        "names = [a.dest for a in build_parser()._subparsers._group_actions[0]._choices_actions]\n"
        "for argv in [['--help']] + [[n, '--help'] for n in names]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        f"print(json.dumps([names, [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, heavy = json.loads(done.stdout.splitlines()[-1])
    assert {"morph", "travel", "studio", "doctor"} <= set(names)
    assert heavy == []
