"""Request and response shapes: the OpenAPI document is generated from these, and creation
requests are validated with them, so the document and the behaviour cannot disagree."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from quart_schema import OpenAPIProvider
from werkzeug.routing import BaseConverter

from ._settings import JOB_ID, MAX_BATCH, MAX_DURATION

JobId = Annotated[str, Field(pattern=f"^{JOB_ID}$")]


class CreateJob(BaseModel):
    # Strict: ``"duration": false`` or ``"5"`` is a mistake to report, not a value to coerce.
    model_config = ConfigDict(extra="forbid", strict=True)

    job_id: JobId | None = Field(None, description="Chosen ID; generated when absent")
    duration: float | None = Field(
        None,
        ge=0,
        le=MAX_DURATION,
        allow_inf_nan=False,
        description="Seconds from creation to the final state (default: the completion time)",
    )
    outcome: Literal["completed", "error"] | None = Field(
        None, description="Final state; drawn from the server's error rate when absent"
    )


class JobView(BaseModel):
    job_id: str
    result: Literal["pending", "completed", "error"]
    progress: float = Field(ge=0, le=1)
    elapsed: float = Field(ge=0)
    eta: float | None = Field(
        None,
        ge=0,
        description="Seconds until the final state; 0 once reached (absent with --no-hints)",
    )


class BatchView(BaseModel):
    jobs: list[JobView]
    unknown: list[str] = Field(description="Requested IDs that name no job")


class LegacyStatus(BaseModel):
    result: Literal["pending", "completed", "error"]


class ElevenLabsDubbing(BaseModel):
    """``GET /v1/dubbing/{dubbing_id}`` as ElevenLabs answers it (``--dialect elevenlabs``)."""

    dubbing_id: str
    name: str
    status: Literal["dubbing", "dubbed", "failed"]
    target_languages: list[str]
    error: str | None


class HeyGenData(BaseModel):
    video_translate_id: str
    status: Literal["pending", "running", "success", "failed"]
    url: str | None = Field(None, description="The translated video, once it succeeded")
    message: str | None = Field(None, description="Why it failed")


class HeyGenTranslation(BaseModel):
    """``GET /v2/video_translate/{id}`` as HeyGen answers it (``--dialect heygen``)."""

    error: None
    data: HeyGenData


JOB_ID_PATTERN = f"^{JOB_ID}$"
BATCH_IDS_PATTERN = f"^{JOB_ID}(,{JOB_ID}){{0,{MAX_BATCH - 1}}}$"


class BatchQuery(BaseModel):
    ids: str = Field(
        pattern=BATCH_IDS_PATTERN, description=f"Comma-separated job IDs, at most {MAX_BATCH}"
    )


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable kind of error")
    detail: str = Field(description="What was wrong, for a person")


class Health(BaseModel):
    status: Literal["ok"]
    jobs: int


class PreferHeader(BaseModel):
    prefer: str | None = Field(
        None, description="RFC 7240 preferences; wait=N holds a pending answer up to N seconds"
    )


class SimOpenAPIProvider(OpenAPIProvider):
    """quart-schema's document, completed with what its decorators cannot say."""

    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        param = super().build_path_parameter(name, converter)
        if name == "job_id":
            param["schema"] = {"type": "string", "pattern": JOB_ID_PATTERN}
        return param

    def schema(self) -> dict[str, Any]:
        doc = super().schema()
        for param in doc["paths"].get("/jobs", {}).get("get", {}).get("parameters", []):
            if param["name"] == "ids":
                param["required"] = True
        create = doc["paths"].get("/jobs", {}).get("post", {}).get("requestBody")
        if create is not None:
            create["required"] = False  # an empty body creates a job with every default
        metrics = doc["paths"].get("/metrics", {}).get("get")
        if metrics is not None:
            metrics["responses"] = {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            }
        return doc
