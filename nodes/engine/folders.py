"""What a folder of labelled images looks like, said once: the files that are images, and the
names of the split folders (``train/``, ``val/``, ...) whose sub-folders are the classes. The
engine's loader (``images``) and the exported script (``standalone``, which writes these into the
script) read them from here; nodeflow's upload handler, which cannot import the catalogue, keeps
a copy that a test holds equal to this one.

Plain values only (no torch): the script copies them by their text."""

#: the file suffixes read as images, lower case
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
#: each split and the folder names that hold it, the first found wins (lower case)
SPLIT_ALIASES = {"train": ("train", "training"), "validation": ("validation", "val", "valid"),
                 "test": ("test", "testing")}
