"""What a CRDS file name says: whether it is safe, its kind, instrument and type."""
import re

from .models import MAPPING, REFERENCE

MAPPING_EXTENSIONS = (".pmap", ".imap", ".rmap")

# Plain basenames only (a subset of crds.core.config.FILE_RE): no separators, no leading dot.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

# HST reference names carry their type as a suffix: 4bb1536oj_drk.fits
_HST_SUFFIX_TYPES = {
    "drk": "darkfile", "bia": "biasfile", "pfl": "pfltfile", "lfl": "lfltfile",
    "flt": "flatfile", "idc": "idctab", "bpx": "bpixtab", "ccd": "ccdtab",
    "a2d": "atodtab", "crr": "crrejtab", "osc": "oscntab",
}


def is_safe_name(name):
    return bool(_SAFE_NAME.fullmatch(name)) and ".." not in name


def filekind_of(name):
    return MAPPING if name.endswith(MAPPING_EXTENSIONS) else REFERENCE


def guess_instrument_and_reftype(name, observatory):
    """Return (instrument, reftype) from the name alone, '' where it says nothing.

    CRDS-style names are <obs>[_<instrument>[_<type>]]_<serial>.<ext>; HST reference
    files use <id>_<suffix>.fits and say only their type.
    """
    stem = name.rsplit(".", 1)[0].lower()
    parts = stem.split("_")
    if parts[0] == observatory:
        words = parts[1:-1] if parts[-1].isdigit() else parts[1:]
        instrument = words[0] if words else ""
        reftype = words[1] if len(words) > 1 else ""
        return instrument, reftype
    if len(parts) == 2:
        return "", _HST_SUFFIX_TYPES.get(parts[1], parts[1])
    return "", ""


def fits_instrument(path):
    """Read INSTRUME from a FITS primary header without astropy (first blocks only)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(2880 * 4)
    except OSError:
        return ""
    if not header.startswith(b"SIMPLE  ="):
        return ""
    for offset in range(0, len(header) - 79, 80):
        card = header[offset:offset + 80].decode("ascii", "replace")
        if card.startswith("INSTRUME="):
            return card[10:].split("/")[0].strip().strip("'").strip().lower()
        if card.startswith("END "):
            break
    return ""
