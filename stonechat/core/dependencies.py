"""Dependency injection (Robyn's ``DependencyMap``): values given to ``inject_global``/``inject``
reach handlers that declare ``global_dependencies``/``router_dependencies`` parameters."""

from __future__ import annotations

from typing import Any


class DependencyMap:
    def __init__(self) -> None:
        self.global_dependency_map: dict[str, Any] = {}
        self.router_dependency_map: dict[str, Any] = {}

    def add_global_dependency(self, **kwargs: Any) -> None:
        self.global_dependency_map.update(kwargs)

    def add_router_dependency(self, **kwargs: Any) -> None:
        self.router_dependency_map.update(kwargs)

    def get_global_dependencies(self) -> dict[str, Any]:
        return self.global_dependency_map

    def get_router_dependencies(self) -> dict[str, Any]:
        return self.router_dependency_map

    def merge_dependencies(self, target_router: Any) -> None:
        for key, value in self.global_dependency_map.items():
            target_router.dependencies.global_dependency_map.setdefault(key, value)
