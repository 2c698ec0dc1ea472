"""The augment service: every uploaded video becomes a Cosmos-Transfer augmentation."""

from __future__ import annotations
