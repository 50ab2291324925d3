# Copyright 2026 The llave-hf authors. Licensed under the Apache License, Version 2.0.
"""Where the image paths of data rows may lead: inside the image root, unless the user trusts the data's paths.

Rows come from datasets anyone can publish: a row naming `../../home/me/.ssh/id_rsa.png` or `/etc/…` must not make
training or evaluation read files outside the folder the user pointed at. Paths are resolved (symbolic links
followed, `..` collapsed) before the check, so a link inside the root that points out of it is refused too.
"""

import os


class ImagePathError(ValueError):
    """An image path of a data row that leads outside the image root."""


def resolve_image_path(
    path: str, image_root: str | os.PathLike | None, name: str, allow_absolute: bool = False
) -> str:
    """The file a row's image `path` names, relative to `image_root` (default: the working directory).

    Raises `ImagePathError` naming the item (`name`) for an absolute path, or one that leads out of the root
    (`..`, symbolic links), unless `allow_absolute`: then the data's paths are trusted and used as given.
    """
    root = os.fspath(image_root) if image_root is not None else os.getcwd()
    if allow_absolute:
        return os.path.join(root, path)  # an absolute `path` stays as it is
    if os.path.isabs(path) or os.path.splitdrive(path)[0]:
        raise ImagePathError(
            f"{name}: absolute image path {path!r}; image paths are relative to the image root ({root!r}). "
            "Pass allow_absolute_image_paths=True (--allow_absolute_image_paths) to trust the data's paths."
        )
    joined = os.path.join(root, path)
    real_root, real_path = os.path.realpath(root), os.path.realpath(joined)
    if os.path.commonpath([real_root, real_path]) != real_root:
        raise ImagePathError(
            f"{name}: image path {path!r} leads outside the image root {root!r} (to {real_path!r}). "
            "Pass allow_absolute_image_paths=True (--allow_absolute_image_paths) to trust the data's paths."
        )
    return joined


__all__ = ["ImagePathError", "resolve_image_path"]
