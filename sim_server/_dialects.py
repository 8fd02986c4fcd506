"""The vendors' status APIs the server can speak, so that the client's dialects are tested
end to end: their routes, the header that carries the key, their bodies and their values.

- ``sim``: this project's own API (``GET /jobs/{id}``, hints, long-poll, a batch route).
- ``elevenlabs``: ``GET /v1/dubbing/{dubbing_id}``, key in ``xi-api-key``, a body
  ``{"dubbing_id", "name", "status": "dubbing" | "dubbed" | "failed", "target_languages",
  "error"}``; a 429 carries a JSON detail and no ``Retry-After``.
- ``heygen``: ``GET /v2/video_translate/{video_translate_id}``, key in ``X-Api-Key``, a body
  ``{"error": null, "data": {"video_translate_id", "status": "pending" | "running" |
  "success" | "failed", "url", "message"}}``.

The vendors' dialects have no batch route, no hints and hold no request: the settings turn
those off. ``POST /jobs`` stays, so that jobs can be made in any dialect.
"""

from __future__ import annotations

from typing import Any

from ._jobs import Job

DIALECTS = ("sim", "elevenlabs", "heygen")
#: The status route of each vendor's dialect (Quart's syntax).
ROUTES = {"elevenlabs": "/v1/dubbing/<job_id>", "heygen": "/v2/video_translate/<job_id>"}
#: Where each vendor's dialect takes the API key.
KEY_HEADERS = {"elevenlabs": "xi-api-key", "heygen": "X-Api-Key"}
#: The languages a simulated dubbing job targets.
TARGET_LANGUAGES = ("es", "de")
#: A job's share of its duration spent queued: HeyGen says "pending" then, "running" after.
QUEUED = 0.1


def status_path(path: str) -> bool:
    """Whether a path reads a job's status in any dialect (what faults strike)."""
    return (
        path == "/status"
        or path == "/jobs"
        or path.startswith(("/jobs/", "/v1/dubbing/", "/v2/video_translate/"))
    )


def vendor_view(dialect: str, job: Job, now: float) -> dict[str, Any]:
    """The job as the vendor's status route shows it at server time ``now``."""
    result = job.result_at(now)
    if dialect == "elevenlabs":
        return {
            "dubbing_id": job.job_id,
            "name": f"video {job.job_id}",
            "status": {"pending": "dubbing", "completed": "dubbed", "error": "failed"}[result],
            "target_languages": list(TARGET_LANGUAGES),
            "error": "the dubbing failed" if result == "error" else None,
        }
    assert dialect == "heygen"
    data: dict[str, Any] = {"video_translate_id": job.job_id}
    if result == "pending":
        started = now - job.created_at >= QUEUED * job.duration
        data["status"] = "running" if started else "pending"
    elif result == "completed":
        data["status"] = "success"
        data["url"] = f"https://files.sim.test/translated/{job.job_id}.mp4"
    else:
        data["status"] = "failed"
        data["message"] = "the translation failed"
    return {"error": None, "data": data}
