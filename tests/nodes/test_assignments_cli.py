"""``nodeflow assignments``: add one with its hidden test set, list, close, remove; a refusal is one
line naming what to change, and leaves nothing behind."""

from __future__ import annotations

import zipfile

from nodeflow.cli import main
from tests.imagegen import make_image_set


def test_add_list_close_remove(tmp_path, capsys):
    root = tmp_path / "root"
    images = make_image_set(tmp_path / "src", per_class=4, size=24, layout="folder", class_names=("cat", "dog"))
    archive = tmp_path / "hidden.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        for path in sorted(images.rglob("*.jpg")):
            packed.write(path, path.relative_to(images).as_posix())
    assert main(["assignments", "list", "--workspace", str(root)]) == 0
    assert "no assignments yet" in capsys.readouterr().out
    assert main(["assignments", "add", "Shapes", "--test", str(archive), "--deadline", "2030-01-01T12:00:00+01:00",
                 "--per-day", "2", "--workspace", str(root)]) == 0
    out = capsys.readouterr().out
    assert "8 hidden images in 2 classes, deadline 2030-01-01T11:00:00+00:00, 2 hand-ins per day" in out
    made = out.split()[2]
    assert main(["assignments", "list", "--workspace", str(root)]) == 0
    assert made in capsys.readouterr().out
    assert main(["assignments", "close", made, "--workspace", str(root)]) == 0
    assert "takes no more hand-ins" in capsys.readouterr().out
    assert main(["assignments", "remove", made, "--workspace", str(root)]) == 0
    assert not (root / "assignments" / made).exists()


def test_refusals_are_one_line_and_change_nothing(tmp_path, capsys):
    root = tmp_path / "root"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as packed:
        packed.writestr("../../x/cat/1.png", b"not an image")
    for argv, words in ((["add", "X", "--test", str(tmp_path / "none.zip")], "no such file"),
                        (["add", "X", "--test", str(bad)], "upload refused"),
                        (["add", "X", "--test", str(bad), "--deadline", "soon"], "ISO 8601"),
                        (["close", "nope"], "no assignment 'nope'"),
                        (["remove", "nope"], "no assignment 'nope'")):
        assert main(["assignments", *argv, "--workspace", str(root)]) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and "Traceback" not in err, (argv, err)
    assert [p.name for p in (root / "assignments").iterdir() if p.is_dir()] == []
