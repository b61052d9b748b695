"""The zoo's common shape: a named model with a data generator."""

from __future__ import annotations

import dataclasses
from typing import Callable

from vijax.model import Model


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """A log joint with known answers, used by tests, examples, benchmarks and the CLI.

    Attributes:
        name: registry key.
        model: the :class:`vijax.Model`.
        make_data: ``make_data(key, **sizes) -> data`` (small defaults).
        conjugate: whether every latent has a closed-form CAVI update.
        families: expected family name per latent (None where non-conjugate).
    """

    name: str
    model: Model
    make_data: Callable
    conjugate: bool = True
    families: dict = dataclasses.field(default_factory=dict)
