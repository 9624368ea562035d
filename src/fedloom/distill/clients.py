"""Clients of a heterogeneous federation: each trains its own architecture.

``ArchClient`` is the plain client that first checks the fit message names its
architecture. ``FedMDClient`` keeps its own model between rounds (there is no global
one): it digests the consensus class scores on the public set, revisits its own data,
and answers with its class scores on the public set.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from fedloom.client.client import Client, load_into
from fedloom.client.context import FitContext
from fedloom.client.evaluate import evaluate_task
from fedloom.client.task import Task
from fedloom.core.codec import encode_update, uplink_key
from fedloom.core.errors import NON_FINITE, NonFinite, UpdateRejected
from fedloom.core.message import EVAL_META, EVALUATE_KEY, Message
from fedloom.core.seeding import derive_seed, generator
from fedloom.core.tensors import Tensors, state_of
from fedloom.data.base import TensorData
from fedloom.distill.config import DistillConfig
from fedloom.distill.data import Unlabeled
from fedloom.distill.ensemble import BY_AGREEMENT, distill_into, logits_of
from fedloom.server.strategy import VIEW_KEY

LOGITS = "logits"
"""FedMD's one tensor each way: class scores on the public set, (examples, classes)."""
DIGEST_KEY = "digest"
"""FedMD fit-message meta: the payload holds a consensus to digest (false in round 1)."""
REPORT_KEY = "fedmd"
"""FedMD fit-message meta: true when the round is tested; reply meta: then the client's
own model on the test split, ``{"accuracy": a, "loss": l, "n": test examples}``."""
WEIGHTS = "fedmd/weights"
"""A FedMD client's model in its persistent state: every tensor flattened, then zeros up
to the largest architecture's size (every client's state has the same layout)."""


def pack(state: Tensors, width: int) -> torch.Tensor:
    """``state``'s tensors as one float32 vector of length ``width`` (zero-padded)."""
    flat = torch.cat([t.detach().cpu().float().flatten() for t in state.values()])
    return torch.nn.functional.pad(flat, (0, width - len(flat)))


def unpack(flat: torch.Tensor, template: Tensors) -> Tensors:
    """The tensors ``pack`` flattened, shaped like ``template`` (same names, same order)."""
    out, start = {}, 0
    for name, t in template.items():
        out[name] = flat[start : start + t.numel()].reshape(t.shape).to(t.dtype).clone()
        start += t.numel()
    return out


def check_view(client_id: str, arch: str, message: Message) -> None:
    """``UpdateRejected`` unless the fit message is for architecture ``arch``."""
    named = message.meta.get(VIEW_KEY) if isinstance(message.meta, dict) else None
    if named != arch:
        raise UpdateRejected(
            f"client {client_id} trains {arch}, but the server sent weights for {named!r}"
        )


class ArchClient(Client):
    """A ``Client`` that trains architecture ``arch`` and accepts only its weights."""

    def __init__(self, *args: Any, arch: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arch = arch

    def start(
        self, message: Message, decoded: Tensors | None = None, *, load: bool = True
    ) -> FitContext:
        if message.kind == "fit":
            check_view(self.client_id, self.arch, message)
        return super().start(message, decoded, load=load)


class FedMDClient(Client):
    """A FedMD participant (Li and Wang 2019) with its own model of architecture ``arch``."""

    def __init__(
        self,
        *args: Any,
        arch: str,
        public: Unlabeled,
        distill: DistillConfig,
        initial: Tensors,
        width: int,
        num_classes: int,
        test: TensorData | None,
        task: Task,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.arch = arch
        self.public = public
        self.distill = distill
        self.initial = initial
        self.width = width
        self.num_classes = num_classes
        self.test = test
        self.task = task

    def own_model(self) -> Tensors:
        """This client's weights as of its last round (its architecture's initial ones
        before its first)."""
        kept = self.state.get(WEIGHTS)
        return self.initial if kept is None else unpack(kept, self.initial)

    def handle(self, message: Message) -> Message:
        if message.kind != "fit":
            raise UpdateRejected(
                f"client {self.client_id} cannot handle a {message.kind!r} message"
            )
        check_view(self.client_id, self.arch, message)
        consensus = self._consensus(message)
        load_into(self.model, self.own_model())
        ctx = FitContext(self.client_id, message.round, message.meta, {}, self.state, self.seed)
        self._evaluate_if_asked(message, ctx)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "dropout", message.round, self.client_id))
            if message.meta.get(DIGEST_KEY) is True:  # digest: learn the consensus
                gen = generator(self.seed, "digest", message.round, self.client_id)
                distill_into(
                    self.model, self.public, consensus, self.distill, gen, criterion=BY_AGREEMENT
                )
            ctx.result = self.trainer.train(
                self.model, self.data, self.shuffle(ctx), ctx
            )  # revisit
            scores = logits_of(self.model, self.public.inputs)
        self.state[WEIGHTS] = pack(state_of(self.model), self.width)
        if not bool(torch.isfinite(scores).all()):
            raise NonFinite(f"class scores on the public set have {NON_FINITE}: lower train.lr")
        update = {LOGITS: scores}
        for hook in self.hooks:
            update = hook(update, ctx)
        meta = {
            "num_examples": ctx.result.num_examples,
            "train_loss": ctx.result.loss,
            "steps": ctx.result.steps,
            **(self._report() if message.meta.get(REPORT_KEY) is True else {}),
            **ctx.meta,
        }
        payload = encode_update(self.up, update, uplink_key(ctx.round, self.client_id), ctx.state)
        return Message("fit_result", ctx.round, self.client_id, payload, meta)

    __call__ = handle

    def _consensus(self, message: Message) -> torch.Tensor:
        tensors = self.down.decode(message.payload)
        expected = (len(self.public.fit) + len(self.public.val), self.num_classes)
        consensus = tensors.get(LOGITS)
        if consensus is None or set(tensors) != {LOGITS} or tuple(consensus.shape) != expected:
            shapes = {n: tuple(t.shape) for n, t in tensors.items()}
            raise UpdateRejected(f"FedMD expects {{{LOGITS!r}: {expected}}}, got {shapes}")
        return consensus.float()

    def _evaluate_if_asked(self, message: Message, ctx: FitContext) -> None:
        """Federated evaluation (``eval.client_fraction``) of the model before this round."""
        if message.meta.get(EVALUATE_KEY) is True and self.evaluator and self.holdout is not None:
            report = self.evaluator(
                self.model, self.data, self.holdout, self.seed, (message.round, self.client_id)
            )
            if report:
                ctx.meta[EVAL_META] = report

    def _report(self) -> dict[str, Any]:
        """This client's model on the test split (FedMD has no global model to test)."""
        if self.test is None or len(self.test) == 0:
            return {}
        values = evaluate_task(self.model, self.test, self.task)
        return {
            REPORT_KEY: {
                "accuracy": values["accuracy"],
                "loss": values["loss"],
                "n": len(self.test),
            }
        }


def workspace(template: nn.Module, device: torch.device) -> nn.Module:
    """A client-side copy of an architecture's model (the server keeps its own)."""
    return copy.deepcopy(template).to(device)
