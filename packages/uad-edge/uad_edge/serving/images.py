"""Uploaded image files: decoded (size checked before pixels are), brought to the bundle's input the way the edge
runtime does (RGB, optional bilinear resize, ``[3, H, W]`` in [0, 1]), and the heatmap overlay as PNG bytes."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from uad_edge.serving.errors import RequestError

__all__ = ["DecodedImage", "decode_image", "heatmap_png"]


@dataclass(frozen=True)
class DecodedImage:
    """The image at the bundle's size: ``rgb`` HxWx3 uint8 (for the overlay) and ``tensor`` 3xHxW float32."""

    rgb: np.ndarray
    tensor: np.ndarray


def decode_image(data: bytes, size: tuple[int, int], *, resize: bool, max_pixels: int) -> DecodedImage:
    """Decode ``data``; a file that is not an image, larger than ``max_pixels``, or not ``size`` (H, W) without
    ``resize`` is a :class:`RequestError` (400/413)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise RequestError(400, "the upload is empty; send an image file.")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                raise RequestError(413, f"the image is {im.width}x{im.height}, more than {max_pixels} pixels.")
            im.load()
            array = np.asarray(im.convert("RGB"))
    except RequestError:
        raise
    except UnidentifiedImageError as exc:
        raise RequestError(400, "the upload is not an image file pillow can read (PNG, JPEG, BMP, TIFF, WebP...).") \
            from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise RequestError(400, f"the upload cannot be read as an image ({type(exc).__name__}: "
                                f"{str(exc)[:200]}).") from exc
    height, width = size
    if array.shape[:2] != (height, width):
        if not resize:
            raise RequestError(400, f"the image is {array.shape[1]}x{array.shape[0]} (WxH) but the model takes "
                                    f"{width}x{height}; resize it, or pass ?resize=true.")
        array = np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR))
    tensor = np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / 255.0
    return DecodedImage(rgb=array, tensor=tensor)


def heatmap_png(rgb: np.ndarray, anomaly_map: np.ndarray, mask: np.ndarray | None) -> bytes:
    """The normalised anomaly map blended over the image (predicted mask outlined), as PNG bytes."""
    from PIL import Image

    from uad_edge.overlay import overlay

    buffer = io.BytesIO()
    Image.fromarray(overlay(rgb, anomaly_map, mask)).save(buffer, format="PNG")
    return buffer.getvalue()
