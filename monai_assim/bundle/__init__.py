"""Support code for the MONAI bundles in ``bundles/``: run preparation, run outputs, config generation, export."""

from .export import bundle_file, export_bundle, labelled_images
from .run_files import (
    check_checkpoint,
    check_writable_dir,
    checkpoint_epoch,
    checkpoint_path,
    list_images,
    load_datalist,
    load_run_summary,
    run_class_names,
    run_setting,
)
from .run_setup import DEMO_NOTICE_FILE, SUMMARY_FILE, RunSetup, default_output_dir, find_dataset

__all__ = [
    "DEMO_NOTICE_FILE",
    "SUMMARY_FILE",
    "RunSetup",
    "bundle_file",
    "check_checkpoint",
    "check_writable_dir",
    "checkpoint_epoch",
    "checkpoint_path",
    "default_output_dir",
    "export_bundle",
    "find_dataset",
    "labelled_images",
    "list_images",
    "load_datalist",
    "load_run_summary",
    "run_class_names",
    "run_setting",
]
