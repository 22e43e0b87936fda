"""A kustomize renderer for this project's base, enough for tests without the kustomize binary.

Follows https://kubectl.docs.kubernetes.io/references/kustomize/kustomization/ for the fields the
base uses: ``resources`` (files of one or more objects), ``configMapGenerator`` with ``files`` (the
key is the file's name), ``generatorOptions`` (``disableNameSuffixHash``, ``labels``) and ``images``
(``newName``/``newTag`` for containers and init containers whose image is ``name``). Any other
field is refused, so the tests never pass over something this renderer would silently drop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["render"]

_KNOWN = {"apiVersion", "kind", "resources", "configMapGenerator", "generatorOptions", "images"}


def _generated(root: Path, spec: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    assert set(spec) <= {"name", "files"}, f"unsupported configMapGenerator fields: {sorted(spec)}"
    assert options.get("disableNameSuffixHash") is True, "a hashed name would need the hash computed"
    data = {Path(name).name: (root / name).read_text(encoding="utf-8") for name in spec["files"]}
    metadata: dict[str, Any] = {"name": spec["name"]}
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def _set_images(obj: dict[str, Any], images: list[dict[str, str]]) -> None:
    pod = obj.get("spec", {}).get("template", {}).get("spec")
    if pod is None:
        return
    for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
        for image in images:
            if container["image"].split(":")[0] == image["name"]:
                name = image.get("newName", image["name"])
                container["image"] = f"{name}:{image['newTag']}" if "newTag" in image else name


def render(root: Path) -> list[dict[str, Any]]:
    """The objects ``kustomize build root`` would print, in resource order, generated ones last."""
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - _KNOWN
    assert not unknown, f"kustomization fields this renderer does not apply: {sorted(unknown)}"
    objects: list[dict[str, Any]] = []
    for name in kustomization.get("resources", []):
        text = (root / name).read_text(encoding="utf-8")
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    options = kustomization.get("generatorOptions", {})
    for spec in kustomization.get("configMapGenerator", []):
        objects.append(_generated(root, spec, options))
    for obj in objects:
        _set_images(obj, kustomization.get("images", []))
    return objects
