"""The HTTP routes that try a trained model on pictures (see :mod:`nodeflow.trying`):

- ``POST /api/models/{node_id}/predict``: multipart/form-data with one or several files in the field
  ``image``; ``?overlay=true`` adds each picture's Grad-CAM overlay of its top class, ``?top=K`` keeps
  the K most probable classes. The answer::

      {"node": "train", "stale": false, "loaded": true, "seconds": 0.41,
       "results": [{"image": "cat.jpg", "classes": [{"label": "cat", "probability": 0.93}, ...],
                    "overlay_url": "/api/models/train/overlays/<sha256>.png"}, ...],
       "image": "cat.jpg", "classes": [...], "overlay_url": "..."}

  ``results`` has one entry per picture, in the order sent; with exactly one picture its ``image``,
  ``classes`` and ``overlay_url`` are repeated at the top. ``stale`` true (with a ``note``): the node
  changed since it trained, and its last trained model answered. ``loaded``: this request loaded the
  model (the first one, or the first after the model's process went idle).
- ``GET /api/models/{node_id}/overlays/{name}``: an overlay PNG of a recent answer.

Trying is work on the machine: a project's viewer is refused (403), as the session declares it.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import anyio
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile as StarletteUpload

from nodeflow.trying import MAX_PICTURE_BYTES, MAX_PICTURES, Picture, TryRefused, check_node, shown_name

from ..api import API_BASE, OVERLAY_NAME

PREDICT_SUMMARY = (f"Classify one or several images (multipart field 'image', at most {MAX_PICTURES}) with the "
                   "node's trained model: each image's classes ranked by probability, and with overlay=true the "
                   "Grad-CAM overlay URL of its top class. 'results' holds one entry per image, in the order sent; "
                   "with one image its 'image', 'classes' and 'overlay_url' are also at the top. 'stale' true (with "
                   "a 'note'): the node changed since it trained, and its last trained model answered")


#: the request body, documented by hand: the route reads the form itself, after the access check
FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"], "properties": {"image": {
        "type": "array", "items": {"type": "string", "format": "binary"}, "maxItems": MAX_PICTURES,
        "description": "the images (JPEG, PNG, BMP, GIF, WebP, TIFF; grey and RGBA are converted)"}}}}}}}


def model_routes(app: FastAPI, hub: Any, guard: Any) -> None:
    """The routes on ``hub``'s session (the whole session, or a viewer's read-only view of it)."""

    @app.post("/api/models/{node_id}/predict", tags=["models"], summary=PREDICT_SUMMARY, openapi_extra=FORM,
              responses={403: {"description": "the project is open read-only to you: trying spends its owner's "
                                              "machine"},
                         404: {"description": "no such node, or it gives no trained model"},
                         409: {"description": "the node has not trained yet ('run NODE first'), or its model "
                                              "could not be run (the cause is named)"},
                         413: {"description": f"more than {MAX_PICTURES} images, an image over "
                                              f"{MAX_PICTURE_BYTES // (1024 * 1024)} MB, or too many pixels"},
                         415: {"description": "a body that is not multipart/form-data"},
                         422: {"description": "a file that is not an image, is empty or too small (named), "
                                              "or a malformed argument"}})
    async def post_predict(request: Request, node_id: str,
                           overlay: Annotated[bool, Query(description=(
                               "add each image's Grad-CAM overlay of its top class"))] = False,
                           top: Annotated[int | None, Query(ge=1, le=10_000, description=(
                               "keep the K most probable classes (default: all)"))] = None) -> Any:
        guard(request)
        predict = hub.session.predict  # a viewer's read-only view refuses here (403), before the body is read
        try:
            check_node(hub.session.document.graph, node_id)
        except TryRefused as exc:
            return _refused(exc.status, str(exc))
        form = await request.form()
        try:
            uploads = [value for value in form.getlist("image") if isinstance(value, StarletteUpload)]
            if not uploads:
                return _refused(422, "send the images as files in the multipart field 'image'")
            if len(uploads) > MAX_PICTURES:
                return _refused(413, f"{len(uploads)} images: send at most {MAX_PICTURES} at once")
            pictures = [Picture(shown_name(upload.filename, index), await upload.read(MAX_PICTURE_BYTES + 1))
                        for index, upload in enumerate(uploads)]
        finally:
            await form.close()
        try:
            found = await anyio.to_thread.run_sync(lambda: predict(node_id, pictures, overlay, top))
        except TryRefused as exc:
            return _refused(exc.status, str(exc), exc.picture)
        base = request.scope.get(API_BASE, "/api")
        for result in found["results"]:
            name = result.pop("overlay", None)
            if overlay:
                result["overlay_url"] = (f"{base}/models/{quote(node_id, safe='')}/overlays/{name}" if name else None)
        if len(found["results"]) == 1:
            found.update({k: v for k, v in found["results"][0].items()})
        return found

    @app.get("/api/models/{node_id}/overlays/{name}", tags=["models"],
             summary="A Grad-CAM overlay PNG of a recent prediction (kept in memory for a while)",
             response_class=Response, responses={200: {"content": {"image/png": {}}},
                                                 404: {"description": "no such overlay (or no longer kept)"}})
    def get_predicted_overlay(request: Request, node_id: str, name: str) -> Response:
        guard(request)
        png = hub.session.predicted_overlay(name) if OVERLAY_NAME.fullmatch(name) else None
        if png is None:
            raise HTTPException(404, f"no overlay '{name[:80]}' (overlays are kept for a while; predict again)")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def _refused(status: int, message: str, picture: str | None = None) -> JSONResponse:
    return JSONResponse({"detail": message, **({"image": picture} if picture is not None else {})},
                        status_code=status)
