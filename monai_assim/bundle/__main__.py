"""
Command line of :mod:`monai_assim.bundle`::

    python -m monai_assim.bundle export <run_dir> <dest> [--zip] [--name NAME] [--checkpoint best|last|best_clean|best_robust|FILE]

(``python -m monai_assim.bundle.generate`` regenerates the bundles' configs from their templates.)
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_assim.bundle", description="monai_assim bundle tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    export = commands.add_parser(
        "export",
        help="write a trained run as a bundle in MONAI's model-zoo layout",
        description="Write a trained run as a stand-alone bundle in MONAI's model-zoo layout "
        "(configs/, models/model.pt, models/model.ts, docs/README.md, LICENSE).",
    )
    export.add_argument("run_dir", help="output folder of a train.json run (run_summary.json, checkpoints/)")
    export.add_argument("dest", help="the bundle folder to write (must not exist, or be empty)")
    export.add_argument("--zip", action="store_true", help="write <dest>.zip (unpacks to <name>/) instead of a folder")
    export.add_argument("--name", default=None, help="bundle name for monai.bundle.load (default: dest's folder name)")
    export.add_argument(
        "--checkpoint",
        default="best",
        help="best (default: the epoch the run's selection rule kept), last, best_clean, best_robust, or a checkpoint file",
    )
    args = parser.parse_args(argv)

    from monai_assim.bundle.export import export_bundle

    try:
        path = export_bundle(args.run_dir, args.dest, name=args.name, zip=args.zip, checkpoint=args.checkpoint)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.run_dir} -> {path}")
    return 0


if __name__ == "__main__":
    from monai_assim.errors import install_excepthook

    install_excepthook()  # a user error ends stderr with its message and hint
    sys.exit(main())
