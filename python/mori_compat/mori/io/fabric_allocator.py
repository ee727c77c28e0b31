"""MORI's FABRIC allocator helpers. ringxfer has no FABRIC (UALink) backend: the names
exist so that imports work, and each call says why it cannot serve."""

import contextlib

__all__ = ["fabric_mem_pool", "fabric_torch_allocator", "make_fabric_mem_pool", "use_fabric_torch_allocator"]


def _refuse(name):
    raise NotImplementedError(
        f"ringxfer-mori: {name} needs MORI's FABRIC (UALink) allocator; ringxfer has no FABRIC backend "
        "(allocate with torch's default allocator and register the tensors)"
    )


def fabric_torch_allocator():
    _refuse("fabric_torch_allocator")


def use_fabric_torch_allocator() -> None:
    _refuse("use_fabric_torch_allocator")


def make_fabric_mem_pool():
    _refuse("make_fabric_mem_pool")


@contextlib.contextmanager
def fabric_mem_pool():
    _refuse("fabric_mem_pool")
    yield
