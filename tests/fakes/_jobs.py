"""A provider-neutral fine-tuning job simulation, driven one transition at a time.

Theory of operation. A :class:`SimJob` holds OpenAI's vocabulary internally (providers.md §1.6,
§1.7); each fake renders it in its provider's shapes (Azure's dated API maps ``validating_files``
and ``queued`` to ``pending`` and ``warn`` to ``warning``, §4.1, §8.1). :meth:`JobSimulator.step`
performs exactly one transition, so tests are deterministic::

    validating_files ──▶ queued ──▶ running (step 1 … total_steps) ──▶ succeeded
          │                            │  ▲
          └──▶ failed                  ▼  │ resume
       (bad training data)           paused
    any non-terminal ──cancel──▶ cancelled

Each transition appends events (``type: "message"``); each training step appends a ``metrics``
event (``data: {step, train_loss, train_mean_token_accuracy, total_steps, …}``) and a checkpoint
(``ftckpt_…``, model ``<fine-tuned model>:ckpt-step-<N>``). Success sets ``fine_tuned_model`` =
``ft:<model>:<org>:<suffix>:<short id>``, ``trained_tokens``, ``finished_at`` and a result file
made by the fake's file store (``make_result_file``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes._common import ApiError, Clock, new_id

__all__ = ["TERMINAL", "Checkpoint", "Event", "JobSimulator", "SimJob", "inspect_training_data", "page"]

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_ORDER = ("validating_files", "queued", "running", "succeeded")


@dataclass
class Event:
    id: str
    created_at: int
    level: str  # info | warn | error (OpenAI spelling)
    message: str
    type: str = "message"
    data: dict[str, Any] | None = None


@dataclass
class Checkpoint:
    id: str
    created_at: int
    step_number: int
    model: str
    metrics: dict[str, float]


@dataclass
class SimJob:
    id: str
    owner: str
    created_at: int
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int = 42
    metadata: dict[str, str] | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] | None = None
    integrations: list[dict[str, Any]] | None = None
    status: str = "validating_files"
    step: int = 0
    total_steps: int = 3
    estimated_finish: int | None = None
    finished_at: int | None = None
    trained_tokens: int | None = None
    fine_tuned_model: str | None = None
    result_files: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    data_problem: str | None = None  # why validation will fail, if it will
    examples: int = 0
    tokens: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def concrete_hyperparameters(self) -> dict[str, Any]:
        """Like :meth:`resolved_hyperparameters` but never ``"auto"`` (Azure's dated API)."""
        defaults = {"batch_size": 1, "learning_rate_multiplier": 1.0, "n_epochs": 3}
        sent = self.resolved_hyperparameters()
        return {k: (defaults[k] if sent.get(k, "auto") == "auto" else sent[k]) for k in defaults}

    def resolved_hyperparameters(self) -> dict[str, Any]:
        """Concrete values once training started (OpenAI resolves ``"auto"``), else as sent."""
        sent = dict(self.hyperparameters)
        if self.method is not None:
            sub = self.method.get(str(self.method.get("type")), {}) or {}
            sent.update(sub.get("hyperparameters", {}) or {})
        if self.status in ("validating_files", "queued"):
            return {k: sent.get(k, "auto") for k in ("batch_size", "learning_rate_multiplier", "n_epochs")}
        defaults = {"batch_size": 1, "learning_rate_multiplier": 1.0, "n_epochs": 3}
        return {k: (defaults[k] if sent.get(k, "auto") == "auto" else sent[k]) for k in defaults}


def inspect_training_data(path: Path) -> tuple[int, int, str | None]:
    """(examples, rough token count, problem or None) for a JSONL chat file (providers.md §2.1):
    every non-blank line must be a JSON object with a non-empty ``messages`` list (a DPO line's
    ``input.messages`` counts too)."""
    examples = tokens = 0
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                return examples, tokens, f"Invalid file format. Line {number} is not valid JSON."
            messages = line.get("messages") if isinstance(line, dict) else None
            if messages is None and isinstance(line, dict) and isinstance(line.get("input"), dict):
                messages = line["input"].get("messages")
            if not isinstance(messages, list) or not messages:
                return (
                    examples,
                    tokens,
                    f'Invalid file format. Line {number}, key "messages": missing or empty.',
                )
            examples += 1
            tokens += len(raw.split())
    if examples == 0:
        return 0, 0, "Invalid file format. The file contains no examples."
    return examples, tokens, None


class JobSimulator:
    """Creates :class:`SimJob` s and moves them through their states (see the module docstring)."""

    def __init__(
        self,
        clock: Clock,
        *,
        org: str,
        make_result_file: Callable[[SimJob], str],
        total_steps: int = 3,
        min_examples: int = 1,
        name_model: Callable[[SimJob], str] | None = None,
    ) -> None:
        self.clock = clock
        self.name_model = name_model
        self.org = org
        self.make_result_file = make_result_file
        self.total_steps = total_steps
        self.min_examples = min_examples
        self.jobs: dict[str, SimJob] = {}

    def create(
        self, owner: str, body: dict[str, Any], training_path: Path | None, *, prefix: str = "ftjob-"
    ) -> SimJob:
        job = SimJob(
            id=new_id(prefix),
            owner=owner,
            created_at=self.clock.now(),
            model=str(body["model"]),
            training_file=str(body["training_file"]),
            validation_file=body.get("validation_file"),
            suffix=body.get("suffix"),
            seed=body["seed"] if body.get("seed") is not None else 42,
            metadata=body.get("metadata"),
            hyperparameters=dict(body.get("hyperparameters") or {}),
            method=body.get("method"),
            integrations=body.get("integrations"),
            total_steps=self.total_steps,
        )
        if training_path is not None:
            job.examples, job.tokens, job.data_problem = inspect_training_data(training_path)
            if job.data_problem is None and job.examples < self.min_examples:
                job.data_problem = (
                    f"Training file has {job.examples} example(s), "
                    f"but must have at least {self.min_examples}."
                )
        self.jobs[job.id] = job
        self._event(job, f"Created fine-tuning job: {job.id}")
        self._event(job, f"Validating training file: {job.training_file}")
        return job

    def get(self, owner: str, job_id: str) -> SimJob:
        job = self.jobs.get(job_id)
        if job is None or job.owner != owner:
            raise ApiError(404, f"No fine-tuning job found with id '{job_id}'.", param="fine_tuning_job_id")
        return job

    # -- transitions ---------------------------------------------------------------------------
    def step(self, job: SimJob) -> None:
        """Exactly one transition; terminal and paused jobs stay put."""
        now = self.clock.now()
        if job.status == "validating_files":
            if job.data_problem is not None:
                self._fail(job, "invalid_training_file", job.data_problem, "training_file")
                return
            if job.examples < 10:
                self._event(
                    job,
                    f"Training file has only {job.examples} example(s); 10 or more are recommended.",
                    "warn",
                )
            job.status = "queued"
            self._event(job, "Files validated, moving job to queued state")
        elif job.status == "queued":
            job.status = "running"
            job.estimated_finish = now + 60 * job.total_steps
            self._event(job, "Fine-tuning job started")
        elif job.status == "running" and job.step < job.total_steps:
            self._train_step(job)
        elif job.status == "running":
            self._succeed(job)

    def advance(self, job: SimJob, to: str | None = None, steps: int = 1) -> str:
        """``steps`` transitions, or — with ``to`` — as many as it takes to reach ``to``
        (``"failed"``/``"cancelled"`` are forced; others must lie ahead on the happy path)."""
        if to is None:
            for _ in range(steps):
                self.step(job)
            return job.status
        if to == "failed":
            if not job.terminal:
                self._fail(
                    job, "server_error", "The job failed due to an internal error (forced by the test).", None
                )
            return job.status
        if to == "cancelled":
            self.cancel(job)
            return job.status
        if to == "paused":
            self.advance(job, "running")
            self.pause(job)
            return job.status
        if to not in _ORDER:
            raise ValueError(f"cannot advance to {to!r}")
        if job.status == "paused":
            self.resume(job)
        for _ in range(job.total_steps + len(_ORDER) + 1):
            if job.status == to or job.terminal:
                break
            if to == "running" and job.status == "running":
                break
            self.step(job)
        if job.status != to:
            raise ValueError(f"job {job.id} is {job.status}, cannot reach {to!r}")
        return job.status

    def cancel(self, job: SimJob) -> None:
        if job.terminal:
            raise ApiError(400, f"Job {job.id} has already completed: {job.status}.", code="invalid_state")
        job.status = "cancelled"
        job.finished_at = self.clock.now()
        job.estimated_finish = None
        self._event(job, "Fine-tuning job cancelled")

    def pause(self, job: SimJob) -> None:
        if job.status != "running":
            raise ApiError(
                400, f"Job {job.id} is {job.status}; only running jobs can be paused.", code="invalid_state"
            )
        job.status = "paused"
        job.estimated_finish = None
        self._event(job, "Fine-tuning job paused")

    def resume(self, job: SimJob) -> None:
        if job.status != "paused":
            raise ApiError(
                400, f"Job {job.id} is {job.status}; only paused jobs can be resumed.", code="invalid_state"
            )
        job.status = "running"
        job.estimated_finish = self.clock.now() + 60 * (job.total_steps - job.step + 1)
        self._event(job, "Fine-tuning job resumed")

    # -- internals -----------------------------------------------------------------------------
    def fine_tuned_model(self, job: SimJob) -> str:
        if self.name_model is not None:
            return self.name_model(job)
        return f"ft:{job.model}:{self.org}:{job.suffix or ''}:{job.id[-8:]}"

    def _train_step(self, job: SimJob) -> None:
        job.step += 1
        loss = round(2.0 / (job.step + 1), 4)
        accuracy = round(1.0 - loss / 2.5, 4)
        metrics: dict[str, float] = {
            "step": job.step,
            "train_loss": loss,
            "train_mean_token_accuracy": accuracy,
        }
        if job.validation_file is not None:
            metrics.update(
                valid_loss=round(loss * 1.1, 4), valid_mean_token_accuracy=round(accuracy * 0.95, 4)
            )
        data = {**metrics, "total_steps": job.total_steps}
        self._event(
            job, f"Step {job.step}/{job.total_steps}: training loss={loss}", type="metrics", data=data
        )
        job.checkpoints.append(
            Checkpoint(
                id=new_id("ftckpt_"),
                created_at=self.clock.now(),
                step_number=job.step,
                model=f"{self.fine_tuned_model(job)}:ckpt-step-{job.step}",
                metrics=metrics,
            )
        )

    def _succeed(self, job: SimJob) -> None:
        job.status = "succeeded"
        job.finished_at = self.clock.now()
        job.estimated_finish = None
        job.fine_tuned_model = self.fine_tuned_model(job)
        epochs = job.resolved_hyperparameters()["n_epochs"]
        job.trained_tokens = max(job.tokens, 1) * int(epochs)
        job.result_files = [self.make_result_file(job)]
        self._event(job, f"New fine-tuned model created: {job.fine_tuned_model}")
        self._event(job, "The job has successfully completed")

    def _fail(self, job: SimJob, code: str, message: str, param: str | None) -> None:
        job.status = "failed"
        job.finished_at = self.clock.now()
        job.estimated_finish = None
        job.error = {"code": code, "message": message, "param": param}
        self._event(job, message, "error")
        self._event(job, "The job failed", "error")

    def _event(
        self,
        job: SimJob,
        message: str,
        level: str = "info",
        *,
        type: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        job.events.append(Event(new_id("ftevent-"), self.clock.now(), level, message, type, data))


def page(
    items: list[Any], after: str | None, limit: int, key: Callable[[Any], str]
) -> tuple[list[Any], bool]:
    """Newest-first page after the item with id ``after`` (OpenAI cursor semantics, §1.7).
    ``items`` are oldest first. An unknown cursor is a contract violation."""
    newest_first = list(reversed(items))
    start = 0
    if after is not None:
        ids = [key(item) for item in newest_first]
        if after not in ids:
            raise ApiError(
                400, f"Invalid 'after': no object with id '{after}'.", param="after", violation=True
            )
        start = ids.index(after) + 1
    chunk = newest_first[start : start + limit]
    return chunk, start + limit < len(newest_first)
