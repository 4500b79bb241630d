"""A project's uploaded data (a multi-user server's, under ``data/``): list and remove its folders, run
the dataset doctor on one, upload a zip or image files into a new one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import anyio
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from nodeflow.project_data import ProjectData
from nodeflow.uploads import NameTaken, UploadRefused


def data_routes(app: FastAPI, project_data: Callable[[], ProjectData], uploads: anyio.CapacityLimiter) -> None:
    """``/api/data...`` and ``/api/uploads`` on what ``project_data()`` hands out (the whole project's
    data to its owner, a read-only view to a viewer); ``uploads`` bounds the uploads decoded at once,
    all projects together."""

    @app.get("/api/data", tags=["data"], summary="The project's uploaded folders (data/NAME) and their files")
    def get_data() -> list[dict[str, Any]]:
        return project_data().folders()

    @app.delete("/api/data/{name}", tags=["data"], summary="Remove an uploaded folder and its files",
                responses={404: {"description": "no uploaded folder of that name"}})
    def delete_data(name: str) -> dict[str, Any]:
        try:
            return {"removed": project_data().remove(name)}
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.post("/api/data/{name}/doctor", tags=["data"],
              summary="Run the dataset doctor on an uploaded folder: class balance, unreadable, tiny and "
                      "extreme-aspect images, exact duplicates",
              responses={404: {"description": "no uploaded folder of that name, or no doctor in the catalogue"},
                         422: {"description": "the folder cannot be read as a dataset (the reason is named)"}})
    def post_doctor(name: str) -> dict[str, Any]:
        try:
            return project_data().doctor(name)
        except LookupError as exc:
            raise HTTPException(404, str(exc.args[0]) if exc.args else str(exc)) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.post("/api/uploads", tags=["data"],
              summary="Upload a zip, or image files with their folders, into data/NAME (multipart/form-data: "
                      "one .zip file, or files named by their paths, e.g. Cat/1.jpg)",
              responses={409: {"description": "data/NAME is there already (send rename=true for a free name)"},
                         413: {"description": "more than max_total_bytes or max_files (named)"},
                         415: {"description": "a body that is not multipart/form-data"},
                         422: {"description": "refused: zip-slip, a link, a zip bomb, a file that is not an "
                                              "image, too many pixels; the file and the reason are named"},
                         429: {"description": "you have as many uploads arriving as one person may at once "
                                              "(uploads_at_once)"},
                         507: {"description": "the disk quota has no room for it"}})
    async def post_upload(request: Request,
                          name: Annotated[str, Query(min_length=1, max_length=64,
                                                     description="the new folder's name in data/")],
                          rename: Annotated[bool, Query(description="take a free name (NAME-2, ...) when "
                                                                    "data/NAME is there")] = False) -> Any:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "multipart/form-data":
            return refused_answer(415, "send the files as multipart/form-data")
        length = request.headers.get("content-length")
        announced = int(length) if length is not None and length.strip().isascii() and length.strip().isdigit() else None
        try:
            upload = await anyio.to_thread.run_sync(
                lambda: project_data().receive(name, content_type, rename, announced))
        except UploadRefused as exc:
            return upload_refusal(exc)
        try:
            async for chunk in body_chunks(request.receive):
                await anyio.to_thread.run_sync(upload.feed, chunk)
            summary = await anyio.to_thread.run_sync(upload.finish, limiter=uploads)
        except UploadRefused as exc:
            return upload_refusal(exc)
        except ClientGone:
            return refused_answer(400, "upload refused: the connection closed before the body ended; nothing was saved")
        finally:
            with anyio.CancelScope(shield=True):  # what a refused or abandoned upload left goes, whatever happens
                await anyio.to_thread.run_sync(upload.close)
        return {"folder": summary.folder, "path": f"data/{summary.folder}", "images": summary.images,
                "bytes": summary.bytes, "classes": summary.classes, "loose": summary.loose, "skipped": summary.skipped}


class ClientGone(Exception):
    """The client closed the connection before its request's body ended."""


async def body_chunks(receive):
    """The request body's chunks as they arrive (a chunked body too)."""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


#: the HTTP answer to an upload refused at a limit (UploadRefused.limit); any other refusal is 422
UPLOAD_STATUS = {"max_total_bytes": 413, "max_files": 413, "quota": 507, "quota_left": 507, "uploads_at_once": 429}


def upload_refusal(exc: UploadRefused) -> JSONResponse:
    detail = exc.detail()
    status = 409 if isinstance(exc, NameTaken) else UPLOAD_STATUS.get(exc.limit or "", 422)
    return refused_answer(status, detail.pop("message"), **detail)


def refused_answer(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": {"message": message, **extra}}, status_code=status)
