"""A setting's value checked and converted (``coerce``), presets (``protocol=keras``), a
config built from dotted keys, and the values of a command-line override ``key=value``
(also spelled ``--key=value``)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
from typing import Any, get_type_hints

from harness.study.settings import CHOICES, FIELD_TYPES, KEYS, Config
from harness.validate import StudyError, allowed, check_range

# Presets: one named setting that stands for several keys, so a user need not know which
# keys make "what a model in that framework would have done". A preset expands into its
# keys before a config is built: each expanded key is recorded (and enters the id) on its
# own, the preset's name is not. "default" is the harness's own defaults (nothing set), so
# that `protocol=default,keras` is a grid axis.
PRESET_KEY = "protocol"
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # What a tf.keras 2.x model trained as the paper describes would do: the determinant
    # in float32 (the framework's dtype), early stopping on the val_loss Keras reports
    # (task loss + add_loss term, float32), glorot-uniform weights with zero biases, Adam's
    # ε = 1e-7, and EarlyStopping(restore_best_weights=False): the last weights are the
    # ones evaluated. The guidance term's ε stays its own setting (the paper: "< 1e-3").
    "keras": {
        "entropy.precision": "float32",
        "train.monitor": "total_float32",
        "net.init": "keras",
        "train.adam_eps": 1e-7,
        "train.restore_best": False,
    },
}


def expand_presets(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with its ``protocol`` (if any) replaced by the keys it stands for. A key
    given beside the preset with another value is an error, not silently overridden."""
    if PRESET_KEY not in values:
        return values
    values = dict(values)
    name = values.pop(PRESET_KEY)
    preset = PRESETS[coerce(PRESET_KEY, name)]
    for key, value in preset.items():
        if key in values and values[key] != value:
            raise StudyError(f"{PRESET_KEY}={name} sets {key}={value!r}, but {key}={values[key]!r} is given too: drop one")
    return {**values, **preset}


@functools.lru_cache(maxsize=None)
def _config_hints() -> dict[str, Any]:
    """Config's field types, resolved once (get_type_hints was most of a large grid's expansion)."""
    return get_type_hints(Config)


def build_config(values: dict[str, Any]) -> Config:
    """{dotted key: value} (validated) -> Config; missing keys take their defaults."""
    nested: dict[str, Any] = {}
    for key, value in expand_presets(values).items():
        check_key(key)
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            nested[head] = value
    hints = _config_hints()
    kwargs = {}
    for name, value in nested.items():
        kind = hints[name]
        kwargs[name] = kind(**value) if dataclasses.is_dataclass(kind) else value
    return Config(**kwargs)


def check_key(key: str) -> None:
    if key not in FIELD_TYPES and key != PRESET_KEY:
        close = difflib.get_close_matches(key, KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise StudyError(f"unknown key {key!r}{hint}; allowed keys: {', '.join(KEYS)}")


def coerce(key: str, value: Any) -> Any:
    """Check a value against the key's type, converting strings from the command line."""
    check_key(key)
    if key == PRESET_KEY:
        if value not in PRESETS:
            raise StudyError(f"bad value {value!r} for {key}: choose one of {', '.join(PRESETS)}")
        return value
    kind = FIELD_TYPES[key]
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, (bool, int)):
                return bool(value)
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and value.is_integer():
                return check_range(key, int(value), value)
            if isinstance(value, (int, str)):
                return check_range(key, int(value))
            raise ValueError
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):  # NaN is not JSON, and no setting means inf
                raise StudyError(f"bad value {value!r} for {key}: expected a finite number")
            return check_range(key, number)
        if kind is str:
            if isinstance(value, (list, tuple)):  # placement given as indices
                return ",".join(str(int(v)) for v in value)
            value = str(value)
            if key in CHOICES and value not in CHOICES[key]:
                raise StudyError(f"bad value {value!r} for {key}: choose one of {', '.join(CHOICES[key])}")
            return value
        if kind == tuple[int, ...]:
            if isinstance(value, str):  # "32-64-128" on the command line
                return check_range(key, tuple(int(v) for v in value.split("-") if v != ""))
            if isinstance(value, int):
                return check_range(key, (value,))
            return check_range(key, tuple(int(v) for v in value))
    except (TypeError, ValueError):
        pass
    raise StudyError(f"bad value {value!r} for {key}: expected {_type_name(kind)}{allowed(key)}")


def _type_name(kind) -> str:
    if kind == tuple[int, ...]:
        return "widths like 32-64"
    return kind.__name__


def _parse_values(key: str, text: str) -> list:
    if text == "":
        raise StudyError(f"bad override {key}=: no value")
    kind = FIELD_TYPES.get(key, str)  # the preset key takes names
    if kind is int and ":" in text and "," not in text:
        start, _, stop = text.partition(":")
        try:
            values = list(range(int(start), int(stop)))
        except ValueError:
            raise StudyError(f"bad range {text!r} for {key}: expected start:stop, e.g. 0:10")
        if not values:
            raise StudyError(f"empty range {text!r} for {key}")
        return values
    if kind is str:  # placements: "[1,5],first" is two values, "1,5" and "first"
        return [coerce(key, part.strip("[]")) for part in re.findall(r"\[[^\]]*\]|[^,]+", text)]
    return [coerce(key, part) for part in text.split(",")]


def key_value_words(words: list[str]) -> tuple[list[str], list[str]]:
    """(the override words among ``words``, ``--key=value`` ones undashed; the others).

    ``--key=value`` is the spelling of Hydra's and nanoGPT's command lines. It is taken
    where ``key`` is a setting, the preset, or dotted (no option has a dot), so that an
    option's typo (``--worker=2``) is not taken for a setting (see ``unknown_word``)."""
    pairs, rest = [], []
    for word in words:
        key = word[2:].partition("=")[0] if word.startswith("--") and "=" in word else None
        if "=" in word and not word.startswith("-"):
            pairs.append(word)
        elif key and (key in FIELD_TYPES or key == PRESET_KEY or ("." in key and not key.startswith("."))):
            pairs.append(word[2:])
        else:
            rest.append(word)
    return pairs, rest


def unknown_word(word: str, options: list[str]) -> str:
    """The one-line error for ``--name=value`` that is neither one of ``options`` nor a
    setting, naming the closest of either."""
    name, _, value = word[2:].partition("=")
    names = [*KEYS, PRESET_KEY, *(o[2:] for o in options if o.startswith("--"))]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean --{close[0]}={value}?" if close else "--help lists both"
    return f"{word} is neither an option nor a setting ({hint})"
