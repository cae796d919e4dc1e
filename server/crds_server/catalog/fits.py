"""Tiny, byte-for-byte deterministic FITS files for the demo set (no astropy needed)."""
import struct

BLOCK = 2880


def _card(keyword, value, comment=""):
    if isinstance(value, bool):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, int):
        text = f"{value:>20}"
    else:
        text = "'" + f"{value.replace(chr(39), chr(39) * 2):<8}" + "'"
    card = f"{keyword:<8}= {text}"
    if comment:
        card += f" / {comment}"
    return f"{card:<80}"[:80]


def _pad(data, fill):
    return data + fill * (-len(data) % BLOCK)


def make_fits(keywords, width=8, height=8, seed=1):
    """A primary HDU with `keywords` and a small int16 image derived from `seed`."""
    cards = [
        _card("SIMPLE", True, "conforms to FITS standard"),
        _card("BITPIX", 16, "array data type"),
        _card("NAXIS", 2, "number of array dimensions"),
        _card("NAXIS1", width),
        _card("NAXIS2", height),
    ]
    cards += [_card(key, value) for key, value in keywords.items()]
    cards.append(f"{'END':<80}")
    header = _pad("".join(cards).encode("ascii"), b" ")
    pixels = [(seed * 7919 + i * 31) % 1000 for i in range(width * height)]
    data = _pad(struct.pack(f">{len(pixels)}h", *pixels), b"\0")
    return header + data
