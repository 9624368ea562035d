"""One client: receive the global weights, train locally, send back the update.

The same class serves a simulated client (many share one model instance, run one after
another) and a networked one. Privacy and algorithm-specific corrections plug in as
*update hooks* (the run's transforms, in the order ``fedloom.client.transforms`` computed
at assembly): functions that see the update after training and before encoding, in
order, and may keep per-client state across rounds. The uplink codec encodes last; a
stateful one (error feedback) keeps its residual in that same per-client state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from fedloom.client.context import FitContext, UpdateHook, split_aux
from fedloom.client.federated_eval import ClientEvaluator
from fedloom.client.trainer import LocalTrainer
from fedloom.core.codec import Codec, encode_update, uplink_key
from fedloom.core.errors import NON_FINITE, NonFinite, UpdateRejected
from fedloom.core.message import EVAL_META, EVALUATE_KEY, MAX_ABS_LOSS, Message
from fedloom.core.seeding import derive_seed, generator
from fedloom.core.tensors import Tensors, state_of, subtract
from fedloom.data.base import Split


class Client:
    def __init__(
        self,
        client_id: str,
        data: Split,
        model: nn.Module,
        trainer: LocalTrainer,
        *,
        seed: int,
        down: Codec,
        up: Codec,
        hooks: Sequence[UpdateHook] = (),
        holdout: Split | None = None,
        evaluator: ClientEvaluator | None = None,
    ) -> None:
        self.client_id = client_id
        self.data = data
        self.model = model
        self.trainer = trainer
        self.seed = seed
        self.down, self.up = down, up
        self.hooks = list(hooks)
        self.state: Tensors = {}
        self.holdout = holdout
        """Data held out for federated evaluation (never trained on)."""
        self.evaluator = evaluator

    def handle(self, message: Message) -> Message:
        ctx = self.start(message)
        # Every random draw of this fit (shuffling, dropout) depends only on (seed, round,
        # client), so any client's round can be replayed alone, e.g. after a resume.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "dropout", message.round, self.client_id))
            ctx.result = self.trainer.train(self.model, self.data, self.shuffle(ctx), ctx)
            local = state_of(self.model)  # on the device: one copy back, after training
            return self.finish(ctx, local)

    def start(
        self, message: Message, decoded: Tensors | None = None, *, load: bool = True
    ) -> FitContext:
        """A fit's context: the global weights (``decoded``: the payload already decoded,
        shared by a group of clients), loaded into the model unless ``load`` is False
        (a vectorized group trains from the context), and the requested evaluation."""
        if message.kind != "fit":
            raise UpdateRejected(
                f"client {self.client_id} cannot handle a {message.kind!r} message"
            )
        payload = self.down.decode(message.payload) if decoded is None else decoded
        global_state, aux = split_aux(payload)
        asked = message.meta.get(EVALUATE_KEY) is True
        evaluate = asked and self.evaluator is not None and self.holdout is not None
        if load or evaluate:
            load_into(self.model, global_state)
        ctx = FitContext(
            self.client_id, message.round, message.meta, global_state, self.state, self.seed
        )
        ctx.aux = aux
        if evaluate:
            assert self.evaluator is not None and self.holdout is not None
            key = (message.round, self.client_id)
            report = self.evaluator(self.model, self.data, self.holdout, self.seed, key)
            if report:
                ctx.meta[EVAL_META] = report
        return ctx

    def shuffle(self, ctx: FitContext) -> torch.Generator:
        """This fit's own data-shuffling stream."""
        return generator(self.seed, "shuffle", ctx.round, self.client_id)

    def finish(self, ctx: FitContext, local: Tensors) -> Message:
        """The reply to a trained fit: ``local`` (the trained weights) minus the global
        ones, checked finite, through the update hooks, encoded by the uplink codec."""
        global_state = ctx.global_state
        update = subtract({name: local[name].cpu() for name in global_state}, global_state)
        result = ctx.result
        assert result is not None, "finish() needs the fit's TrainResult in ctx.result"
        loss = result.loss
        finite = all(bool(torch.isfinite(t).all()) for t in update.values())
        if not finite or not loss_ok(loss):
            raise diverged(loss)
        for hook in self.hooks:
            update = hook(update, ctx)
        meta = {
            "num_examples": result.num_examples,
            "train_loss": result.loss,
            "steps": result.steps,
            **ctx.meta,
        }
        # a stateful codec (error feedback) keeps its residual in the client's state
        payload = encode_update(self.up, update, uplink_key(ctx.round, self.client_id), ctx.state)
        return Message("fit_result", ctx.round, self.client_id, payload, meta)


def loss_ok(loss: float) -> bool:
    """A reportable training loss: finite, of magnitude at most ``MAX_ABS_LOSS``."""
    return math.isfinite(loss) and abs(loss) <= MAX_ABS_LOSS


def diverged(loss: float) -> NonFinite:
    """The error of a fit whose update or loss is non-finite (or overflows)."""
    return NonFinite(
        f"local training diverged (loss {loss:g}; the update or the loss has "
        f"{NON_FINITE} or overflows): lower train.lr"
    )


def load_into(model: nn.Module, tensors: Tensors) -> None:
    """Copy ``tensors`` into the model's parameters and buffers of the same names, in place."""
    target = state_of(model)
    unknown = sorted(set(tensors) - set(target))
    if unknown:
        raise UpdateRejected(f"weights name tensors the model does not have: {unknown[:5]}")
    with torch.no_grad():
        for name, value in tensors.items():
            if target[name].shape != value.shape:
                raise UpdateRejected(
                    f"{name}: shape {tuple(value.shape)} != model's {tuple(target[name].shape)}"
                )
            target[name].copy_(value)
