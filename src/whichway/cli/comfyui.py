"""``whichway comfyui``: put whichway's node pack into a ComfyUI.

The module's top level imports only the standard library.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "comfyui",
        help="install whichway's ComfyUI nodes (prompt paths, noise paths, journeys)",
        description="Link whichway's node pack into a ComfyUI's custom_nodes/ folder.",
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    inst = sub.add_parser(
        "install",
        help="link the pack into COMFYUI/custom_nodes/comfyui-whichway",
        description=(
            "Link (or --copy) the node pack of this whichway into COMFYUI/custom_nodes/. ComfyUI "
            "must run with a Python in which whichway is installed; restart it to load the nodes."
        ),
    )
    inst.add_argument("comfy_dir", type=Path, metavar="COMFYUI", help="the ComfyUI folder")
    inst.add_argument("--copy", action="store_true", help="copy the folder instead of linking it")
    inst.set_defaults(func=run_install)
    where = sub.add_parser("path", help="print the pack folder (to link or clone by hand)")
    where.set_defaults(func=run_path)


def run_install(args: argparse.Namespace) -> int:
    from whichway.comfyui.install import install

    done = install(args.comfy_dir, copy=args.copy)
    if done.action == "already linked":
        print(f"{done.path} already links to {done.target}; nothing to do")
    else:
        print(f"{done.action} {done.path} -> {done.target}")
    print(
        f"restart ComfyUI with a Python that has whichway installed (this one: {sys.executable}); "
        "the nodes are under 'whichway' in the node menu, example workflows under the pack's "
        "example_workflows/"
    )
    return 0


def run_path(args: argparse.Namespace) -> int:
    from whichway.comfyui.install import pack_dir

    print(pack_dir())
    return 0
