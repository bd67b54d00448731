"""Turn ``plugin:<name>`` references in argv and YAML into what jsonargparse understands.

``--model plugin:pbas`` becomes ``--model '{"class_path": "uad_plugins.plugins.pbas.model.Pbas", "init_args":
{<packaged defaults>}}'`` at the same place in argv, so every ``--model.<option>`` the user gives afterwards
overrides a packaged default. In a ``--config`` YAML, ``model: plugin:pbas`` or ``model: {class_path: plugin:pbas,
init_args: {...}}`` is rewritten the same way, the user's ``init_args`` layered over the defaults. A dotted class
path passes through unchanged; a bare registered name is an error that suggests ``plugin:<name>``.

Multi-class training: when ``--data.categories`` is given (or ``categories`` under ``data`` in a config), the data
class becomes its unified counterpart (``MVTecAD`` -> ``UnifiedMVTecAD``, ``Visa`` -> ``UnifiedVisa``, ``Folder``
-> ``CategoryFolders``, ``UadDemo`` or no ``--data`` -> ``UnifiedUadDemo``; see ``uad_plugins.data.multiclass``);
another datamodule with categories is a ConfigError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from uad_plugins.errors import ConfigError
from uad_plugins.registry import get_registry
from uad_plugins.specs import ComponentSpec

__all__ = ["NormalisedArgs", "normalise_argv", "split_prefixed_options"]

#: flag -> component kind
FLAG_KINDS = {"--model": "model", "--synthesizer": "synthesizer"}

_MULTICLASS = "uad_plugins.data.multiclass."
#: datamodule class name -> its unified (multi-class) counterpart, used when a ``categories`` option is given
UNIFIED_DATA = {
    "MVTecAD": _MULTICLASS + "UnifiedMVTecAD",
    "Visa": _MULTICLASS + "UnifiedVisa",
    "UadDemo": _MULTICLASS + "UnifiedUadDemo",
    "Folder": _MULTICLASS + "CategoryFolders",
    **{name: _MULTICLASS + name for name in ("UnifiedMVTecAD", "UnifiedVisa", "UnifiedUadDemo", "CategoryFolders")},
}
#: the unified demo datamodule (``--data.categories`` without ``--data``)
UNIFIED_DEMO = UNIFIED_DATA["UadDemo"]
_CATEGORY_FLAGS = ("--data.categories", "--data.init_args.categories")


class NormalisedArgs:
    """The rewritten argv plus the specs that were resolved on the way (flag -> spec)."""

    def __init__(self, argv: list[str], specs: dict[str, ComponentSpec], has: set[str],
                 data_keys: set[str] | None = None, trainer_keys: set[str] | None = None) -> None:
        self.argv = argv
        self.specs = specs
        self.has = has  # top-level keys the user gave (model, data, ...), from argv or config
        self.data_keys = data_keys or set()  # datamodule options the user gave (num_workers, root, ...)
        #: trainer options the user gave (on the command line or in a --config), whatever their value
        self.trainer_keys = trainer_keys or set()


def _component_json(spec: ComponentSpec, user_init_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    spec.load()  # import now: jsonargparse resolves only classes it can import, and errors read better here
    return {"class_path": spec.class_path, "init_args": {**spec.default_init_args(), **dict(user_init_args or {})}}


def _resolve_value(kind: str, value: str, flag: str, specs: dict[str, ComponentSpec]) -> str | None:
    expanded = get_registry().expand(kind, value)  # an anomalib model name: its class path
    spec = get_registry().resolve(kind, expanded, flag=flag)
    if spec is None:
        return None if expanded == value else expanded
    specs[flag] = spec
    return json.dumps(_component_json(spec))


def _unified_class(value: str, where: str) -> str:
    """The unified datamodule class path for ``value`` (a datamodule name or class path given with categories)."""
    short = value.rsplit(".", 1)[-1]
    ours = "." not in value or value.split(".", 1)[0] in ("anomalib", "uad_plugins")
    if ours and short in UNIFIED_DATA:
        return UNIFIED_DATA[short]
    supported = ", ".join(sorted({"MVTecAD", "Visa", "UadDemo", "Folder", "CategoryFolders"}))
    raise ConfigError(f"{where}: the datamodule {value!r} does not support categories (multi-class training).",
                      hint=f"Use one of: {supported} (or drop --data.categories and train one category).")


def _unify_data_value(value: Any, where: str) -> Any:
    """Rewrite a data value (a class name, a class path, a ``{class_path: ...}`` mapping or its JSON) to the
    unified class."""
    if isinstance(value, Mapping):
        return {**value, "class_path": _unified_class(str(value.get("class_path") or "UadDemo"), where)}
    text = str(value).strip()
    if text.startswith("{"):
        try:
            return json.dumps(_unify_data_value(json.loads(text), where))
        except json.JSONDecodeError:
            pass
    return _unified_class(text, where)


def _config_has_categories(data: Any) -> bool:
    if not isinstance(data, Mapping):
        return False
    init_args = data.get("init_args")
    return "categories" in data or (isinstance(init_args, Mapping) and "categories" in init_args)


def _mapping_value(value: Any) -> Any:
    """A value given as a mapping, as JSON/YAML text or as a YAML file, read into Python (``None`` when it cannot
    be read)."""
    import yaml

    if not isinstance(value, str):
        return value
    text = value
    try:
        if "\n" not in value and not value.lstrip().startswith("{") and Path(value).is_file():
            text = Path(value).read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _data_option_names(value: Any) -> set[str]:
    """Option names in a data value: a ``{class_path, init_args}`` mapping, its JSON/YAML text or a YAML file."""
    value = _mapping_value(value)
    if not isinstance(value, Mapping):
        return set()
    init_args = value.get("init_args")
    names = {str(k) for k in value if k not in ("class_path", "init_args")}
    if isinstance(init_args, Mapping):
        names.update(str(k) for k in init_args)
    return names


def _trainer_option_names(value: Any) -> set[str]:
    """Option names in a trainer value: a mapping, its JSON/YAML text or a YAML file."""
    value = _mapping_value(value)
    return {str(k) for k in value} if isinstance(value, Mapping) else set()


def _normalise_config(text_or_path: str, specs: dict[str, ComponentSpec], has: set[str],
                      data_keys: set[str] | None = None, trainer_keys: set[str] | None = None) -> str:
    import yaml

    path = Path(text_or_path)
    try:
        is_file = path.is_file()
    except OSError:
        is_file = False
    if is_file:
        text = path.read_text(encoding="utf-8")
    elif "\n" in text_or_path or ":" in text_or_path:
        text = text_or_path
    else:
        raise ConfigError(f"config file not found: {text_or_path}", hint="Pass --config PATH.yaml.")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {text_or_path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {text_or_path} must be a mapping of options, got {type(data).__name__}.")
    has.update(data)
    if data_keys is not None:
        data_keys.update(_data_option_names(data.get("data")))
    if trainer_keys is not None:
        trainer_keys.update(_trainer_option_names(data.get("trainer")))
    for key, kind in (("model", "model"), ("synthesizer", "synthesizer")):
        value = data.get(key)
        if isinstance(value, str):
            value = {"class_path": value}
        if isinstance(value, dict) and isinstance(value.get("class_path"), str):
            flag = f"--{key}"
            expanded = get_registry().expand(kind, value["class_path"])
            spec = get_registry().resolve(kind, expanded, flag=f"{key}: in {text_or_path}")
            if spec is None and expanded != value["class_path"]:
                data[key] = {**value, "class_path": expanded}
            if spec is not None:
                specs[flag] = spec
                data[key] = _component_json(spec, value.get("init_args"))
    if _config_has_categories(data.get("data")):
        data["data"] = _unify_data_value(data["data"], f"data: in {text_or_path}")
    if isinstance(data.get("metrics"), list):
        for ref in data["metrics"]:
            get_registry().resolve("metric", str(ref), flag="metrics: in config")
    return yaml.safe_dump(data, sort_keys=False)


def normalise_argv(argv: list[str]) -> NormalisedArgs:
    """Rewrite plugin references in ``argv`` (and in any ``--config``); see the module docstring."""
    out: list[str] = []
    specs: dict[str, ComponentSpec] = {}
    has: set[str] = set()
    data_keys: set[str] = set()
    trainer_keys: set[str] = set()
    data_slot: tuple[str, int] | None = None  # where the data class was last given: ("flag"|"inline"|"config", i)
    categories = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, inline = arg.partition("=")
        if flag in _CATEGORY_FLAGS:
            categories = True
        if flag == "--data":
            data_slot = ("inline", len(out)) if eq else ("flag", len(out) + 1)
        takes_value = flag in FLAG_KINDS or flag in ("--config", "-c", "--metrics")
        if takes_value and not eq and i + 1 >= len(argv):
            out.append(arg)
            break
        if flag.startswith("--") and "." not in flag and flag != "--config":
            has.add(flag[2:])
        if flag.startswith("--data."):
            data_keys.add(flag[len("--data."):].removeprefix("init_args.").split(".", 1)[0])
        elif flag == "--data" and (eq or i + 1 < len(argv)):
            data_keys.update(_data_option_names(inline if eq else argv[i + 1]))
        if flag.startswith("--trainer."):  # --trainer.max_epochs, --trainer.logger.save_dir, --trainer.callbacks+=
            trainer_keys.add(flag[len("--trainer."):].split(".", 1)[0].rstrip("+"))
        elif flag == "--trainer" and (eq or i + 1 < len(argv)):
            trainer_keys.update(_trainer_option_names(inline if eq else argv[i + 1]))
        if flag in FLAG_KINDS:
            value = inline if eq else argv[i + 1]
            i += 1 if eq else 2
            resolved = _resolve_value(FLAG_KINDS[flag], value, flag, specs)
            out += [flag, resolved if resolved is not None else value]
            continue
        if flag.endswith(".help") and flag[:-5] in FLAG_KINDS:  # --model.help plugin:pbas
            value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 1 if eq else 2
            spec = get_registry().resolve(FLAG_KINDS[flag[:-5]], value, flag=flag[:-5])
            if spec is not None:
                spec.load()
                value = spec.class_path
            out += [flag, value]
            continue
        if flag in ("--config", "-c"):
            value = inline if eq else argv[i + 1]
            i += 1 if eq else 2
            text = _normalise_config(value, specs, has, data_keys, trainer_keys)
            out += [flag, text]
            if _config_data(text) is not None:
                data_slot = ("config", len(out) - 1)
            continue
        if flag == "--metrics":
            values = [inline] if eq else []
            j = i + 1
            while not eq and j < len(argv) and not argv[j].startswith("-"):
                values.append(argv[j])
                j += 1
            i = j if not eq else i + 1
            refs = [v for value in values for v in _split_list(value)]
            for ref in refs:
                get_registry().resolve("metric", ref, flag="--metrics")
            out += ["--metrics", json.dumps(refs)]
            continue
        out.append(arg)
        i += 1
    if categories:
        out = _unify_data(out, data_slot, has)
    return NormalisedArgs(out, specs, has, data_keys, trainer_keys)


def _config_data(text: str) -> Any:
    import yaml

    data = yaml.safe_load(text) or {}
    return data.get("data") if isinstance(data, dict) else None


def _unify_data(out: list[str], slot: tuple[str, int] | None, has: set[str]) -> list[str]:
    """``--data.categories`` was given: make the data class (last given in argv or a config) the unified one."""
    if slot is None:
        has.add("data")
        return ["--data", UNIFIED_DEMO, *out]
    kind, index = slot
    out = list(out)
    if kind == "flag" and index < len(out):
        out[index] = _unify_data_value(out[index], "--data")
    elif kind == "inline":
        out[index] = "--data=" + str(_unify_data_value(out[index].partition("=")[2], "--data"))
    elif kind == "config":
        import yaml

        data = yaml.safe_load(out[index])
        data["data"] = _unify_data_value(data["data"], "data: in --config")
        out[index] = yaml.safe_dump(data, sort_keys=False)
    return out


def _split_list(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        try:
            return [str(v) for v in json.loads(value)]
        except json.JSONDecodeError:
            value = value.strip("[]")
    return [v.strip().strip("'\"") for v in value.split(",") if v.strip()]


def split_prefixed_options(argv: list[str], prefix: str) -> tuple[list[str], dict[str, Any]]:
    """Take ``--PREFIX.KEY VALUE`` / ``--PREFIX.KEY=VALUE`` out of ``argv``; values are read as YAML.

    Returns the remaining arguments and ``{KEY: value}`` (an ``init_args.`` in front of KEY is dropped).
    """
    import yaml

    flag = f"--{prefix}."
    rest, options, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(flag) and len(arg) > len(flag):
            key, has_value, value = arg[len(flag):].partition("=")
            if not has_value:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{arg} needs a value.", hint=f"e.g. {arg} VALUE")
                value, i = argv[i + 1], i + 1
            try:
                options[key.removeprefix("init_args.")] = yaml.safe_load(value)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{arg}: {value!r} is not a valid value ({exc}).") from exc
        else:
            rest.append(arg)
        i += 1
    return rest, options
