"""A shared server's projects with the real catalogue: the dataset doctor on a fresh upload, found by
its type and run on the project's workspace, and the pretrained weights every project reads from
one shared folder that no project can write to."""

from __future__ import annotations

import io
import random
import zipfile

import pytest
import torch
import torchvision
from argon2 import PasswordHasher

from nodeflow.edits import EditError
from nodeflow.graph import Graph
from nodeflow.project_data import data_of
from nodeflow.server import ClassServer
from nodeflow.ui.project_pages import doctor_lines
from nodeflow.uploads import receive_zip
from nodeflow.users import Accounts
from tests.imagegen import draw

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def classroom(tmp_path, registry):
    accounts = Accounts(tmp_path / "root", hasher=CHEAP)
    alice = accounts.add("alice", "alice-password")
    server = ClassServer(tmp_path / "root", registry, accounts, device="cpu", isolate=False)
    project = server.projects.create(alice, "pets")
    yield server, server.session(project)
    server.close()


def jpeg(seed: int, size: int = 40) -> bytes:
    buffer = io.BytesIO()
    draw(("circle", "stripes")[seed % 2], size, random.Random(seed)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_the_doctor_looks_at_a_new_upload_and_names_what_it_finds(classroom):
    server, session = classroom
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(8):
            archive.writestr(f"pets/cat/{i}.jpg", jpeg(2 * i))
            archive.writestr(f"pets/dog/{i}.jpg", jpeg(2 * i + 1))
        archive.writestr("pets/dog/again.jpg", jpeg(1))  # the same bytes as dog/0.jpg
        archive.writestr("pets/cat/tiny.jpg", jpeg(4, size=8))
    buffer.seek(0)
    receive_zip(buffer, session.workspace / "data", "pets")
    found = data_of(session, server.quota).doctor("pets")
    assert found["counts"]["exact_duplicates"] == 1 and found["counts"]["tiny"] == 1
    assert sorted(found["findings"]["exact_duplicates"][0]["files"]) == ["dog/0.jpg", "dog/again.jpg"]
    assert found["findings"]["tiny"][0]["file"] == "cat/tiny.jpg"  # named inside the upload, no server path
    assert {row["class"]: row["share"] for row in found["balance"]} == {"cat": pytest.approx(9 / 18, abs=1e-3),
                                                                        "dog": pytest.approx(9 / 18, abs=1e-3)}
    lines = doctor_lines(found)
    assert lines[0] == "class balance: cat 9 (50%), dog 9 (50%)"
    assert any(line.startswith("groups of exact duplicates: 1 (e.g. dog/") for line in lines), lines
    assert "tiny images: 1 (e.g. cat/tiny.jpg)" in lines
    assert session.document.graph.nodes == []  # the page's graph and its cards are not the doctor's business


def test_a_folder_that_is_no_dataset_is_said_so(classroom):
    server, session = classroom
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("loose.jpg", jpeg(0))
    buffer.seek(0)
    receive_zip(buffer, session.workspace / "data", "loose")
    with pytest.raises(ValueError, match="could not read data/loose as a dataset"):
        data_of(session, server.quota).doctor("loose")
    with pytest.raises(LookupError, match="no uploaded folder"):
        data_of(session, server.quota).doctor("../loose")


def test_every_project_reads_the_shared_pretrained_weights_and_none_can_write_there(classroom, tmp_path,
                                                                                     monkeypatch):
    server, session = classroom
    hub = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(hub))  # the server's torch hub cache, filled once by an admin
    name = torchvision.models.get_model_weights("resnet18").DEFAULT.url.rsplit("/", 1)[-1]
    shared = hub / "hub" / "checkpoints" / name
    shared.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), shared)
    before = {p: p.stat().st_mtime_ns for p in hub.rglob("*")}
    graph = Graph.from_data({"format": "nodeflow.graph", "version": 1, "name": "weights", "nodes": [
        {"id": "input", "type": "model.input", "params": {"height": 32, "width": 32, "channels": 3}},
        {"id": "backbone", "type": "model.backbone", "params": {"arch": "resnet18", "weights": "imagenet"}}],
        "edges": [{"source": "input", "source_port": "model", "target": "backbone", "target_port": "model"}]})
    session.document.replace(graph)
    session.queue.submit("backbone")
    session.queue.wait(120)
    run = session.runs.get(1)
    assert run["status"] == "done", run["nodes"]["backbone"].get("error")
    assert any(f"resnet18 weights from {shared}" in entry["message"] for entry in session.snapshot()["log"])
    assert {p: p.stat().st_mtime_ns for p in hub.rglob("*")} == before  # read, never written
    assert not (session.workspace / "weights").exists()  # nothing downloaded into the project
    with pytest.raises(EditError, match="weights"):  # and a project may not name the folder itself
        session.document.edit("set_params", id="backbone", params={"weights": str(shared)})


def test_a_resnets_weights_load_in_torchvisions_names_and_in_ours(tmp_path):
    """torchvision's file (conv1, layer1, ...) and the one the export node writes (stem, layer1, ...):
    their names overlap in layer1..layer4, and both must load whole."""
    from collections import OrderedDict

    from nodes.engine.models import backbone_blocks

    source = torchvision.models.resnet18(weights=None)
    torch.nn.init.constant_(source.conv1.weight, 0.25)
    theirs = tmp_path / "torchvision.pth"
    torch.save(source.state_dict(), theirs)
    blocks = backbone_blocks({"arch": "resnet18", "weights_file": str(theirs)})
    assert torch.all(dict(blocks)["stem"].conv1.weight == 0.25)
    ours = tmp_path / "ours.pth"
    torch.save(torch.nn.Sequential(OrderedDict(blocks)).state_dict(), ours)
    again = backbone_blocks({"arch": "resnet18", "weights_file": str(ours)})
    assert torch.all(dict(again)["stem"].conv1.weight == 0.25)
    assert torch.equal(dict(again)["layer4"][1].conv2.weight, source.layer4[1].conv2.weight)
