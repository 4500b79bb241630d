"""The disk quota as the admission point of uploads: uploads at once per user, and bytes counted as
they arrive against what the quota has left beside the user's other uploads in flight; threads
taking bytes together never pass it, and a measurement of the folder neither counts an upload in
flight twice nor loses one that lands while it walks. And a project's data operations declare
who may call them."""

from __future__ import annotations

import threading

import pytest
from argon2 import PasswordHasher

from nodeflow.access import ReadOnlyView, Refused, undeclared
from nodeflow.project_data import ProjectData
from nodeflow.users import Accounts, DiskQuota, Projects, QuotaExceeded
from nodeflow.users import quota as quota_module
from nodeflow.users.quota import TooManyUploads, folder_bytes

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def data(tmp_path):
    accounts = Accounts(tmp_path / "root", hasher=CHEAP)
    alice = accounts.add("alice", "alice-password")
    accounts.add("bob", "bob-password")
    folder = Projects(accounts).create(alice, "p").path / "data"
    (folder / "old.bin").write_bytes(b"x" * 1000)
    return accounts, folder


def test_an_upload_is_admitted_under_the_limit_of_uploads_at_once_and_the_room_left(data):
    accounts, _ = data
    quota = DiskQuota(accounts, limit=folder_bytes(accounts.user_dir("alice")) + 10_000, uploads_at_once=2)
    first, second = quota.reserve("alice", 4000), quota.reserve("alice")
    with pytest.raises(TooManyUploads, match=r"alice has 2 uploads arriving already.*uploads_at_once = 2"):
        quota.reserve("alice")
    quota.reserve("bob").release()  # one person's limit
    first.release()
    third = quota.reserve("alice", 20_000)  # claims what is free beside the second's bytes
    assert third.claim == quota.limit - quota.usage("alice")
    with pytest.raises(TooManyUploads):
        quota.reserve("alice")
    second.release()
    with pytest.raises(QuotaExceeded, match=r"alice's disk quota is full .* arriving in other uploads, quota"):
        quota.reserve("alice")  # the third holds all the room
    third.release()
    assert quota.arriving("alice") == (0, 0)


def test_bytes_are_counted_before_they_are_written_against_the_room_beside_other_uploads(data):
    accounts, _ = data
    used = folder_bytes(accounts.user_dir("alice"))
    quota = DiskQuota(accounts, limit=used + 10_000, uploads_at_once=3)
    one, two = quota.reserve("alice", 6000), quota.reserve("alice")
    assert (one.claim, two.claim) == (6000, 0)
    two.take(4000)
    with pytest.raises(QuotaExceeded, match=r"what your disk quota has left \(3.9 KiB: quota .*5.9 KiB held by "
                                               "your other uploads arriving now"):
        two.take(1)  # the first announced 6000: it keeps them
    one.take(6000)
    with pytest.raises(QuotaExceeded):
        one.take(1)
    assert quota.left("alice") == 0
    two.give_back(4000)  # a zip unpacked and removed
    one.take(4000)
    one.settle(10_000)
    two.release()
    assert quota.usage("alice") == used + 10_000 and quota.arriving("alice") == (0, 0)
    with pytest.raises(RuntimeError, match="has ended"):
        one.take(1)


def test_threads_taking_bytes_together_never_pass_the_quota(data):
    accounts, _ = data
    used = folder_bytes(accounts.user_dir("alice"))
    quota = DiskQuota(accounts, limit=used + 100_000, uploads_at_once=8)
    reservations = [quota.reserve("alice") for _ in range(8)]
    start = threading.Barrier(8)

    def upload(reservation) -> None:
        start.wait()
        try:
            for _ in range(100):
                reservation.take(500)
        except QuotaExceeded:
            pass

    threads = [threading.Thread(target=upload, args=(r,)) for r in reservations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.held for r in reservations) <= 100_000
    assert sum(r.held for r in reservations) > 100_000 - 8 * 500  # and the room was used
    for r in reservations:
        r.release()
    assert quota.left("alice") == 100_000


def test_a_measurement_leaves_out_uploads_in_flight_and_is_taken_again_when_one_lands(data, monkeypatch):
    accounts, folder = data
    used = folder_bytes(accounts.user_dir("alice"))
    quota = DiskQuota(accounts, limit=used + 50_000)
    reservation = quota.reserve("alice")
    staging = folder / ".upload-x"
    (staging / "files").mkdir(parents=True)
    reservation.folder = staging
    reservation.take(3000)
    (staging / "files" / "a.png").write_bytes(b"y" * 3000)
    quota.forget("alice")
    assert quota.usage("alice") == used  # counted once: by the reservation
    assert quota.left("alice") == 50_000 - 3000

    walks = []

    def walk_while_it_lands(path, skip=()):
        """The real walk; the upload lands in the middle of the first one."""
        walks.append(path)
        total = folder_bytes(path, skip)
        if len(walks) == 1:
            reservation.settle(3000, lambda: (staging / "files").rename(folder / "a"))
        return total

    monkeypatch.setattr(quota_module, "folder_bytes", walk_while_it_lands)
    quota.forget("alice")
    assert quota.usage("alice") == used + 3000  # the walk that raced the landing was not kept
    assert len(walks) == 2 and quota.usage("alice") == folder_bytes(accounts.user_dir("alice"))


def test_every_data_operation_declares_who_may_call_it(data):
    accounts, folder = data
    (folder / "pets" / "cat").mkdir(parents=True)
    (folder / "pets" / "cat" / "1.png").write_bytes(b"png")
    (folder / ".upload-x").mkdir()
    assert undeclared(ProjectData) == []
    viewer = ReadOnlyView(ProjectData(folder.parent, "alice", DiskQuota(accounts, None)), "alice's project")
    assert viewer.folders() == [{"name": "pets", "path": "data/pets", "images": 1, "bytes": 3}]
    for refused in ("remove", "receive", "doctor"):
        with pytest.raises(Refused, match=rf"read-only: alice's project; nothing was changed \('{refused}'"):
            getattr(viewer, refused)
    assert (folder / "pets" / "cat" / "1.png").exists()
