"""The methods by name: every `Method` subclass with a `name` registers itself here when its
module is imported, and a name is looked up in this order:

1. a method already registered;
2. the built-in module of that name, `interventions.methods.<name>`;
3. the `interventions.methods` entry point of that name, from any installed package (the
   way another package adds its methods: `[project.entry-points."interventions.methods"]
   mymethod = "mypackage.mymethod:MyMethod"`);
4. the class a config or an export names (`_target_: "mymodule.MyMethod"` in a method's
   YAML, `"class"` in its export), imported from the Python path.

A method's options come from its class (`Method.Options`, a dataclass): `options_from`
turns a config's `intervention` node into them, refusing in one line a key the class does
not know, a value of the wrong type, a site it does not support, and what it cannot do
(fused training, answers of several tokens) before any model loads.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import asdict, fields, replace

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from interventions.entry_points import method_entry_points
from interventions.errors import ConfigError
from interventions.spec import InterventionSpec, TrainConfig, field_kind

TARGET = "_target_"  # the key of a method's config that names its class
REGISTRY: dict[str, type] = {}
# modules of this package that hold no method of their own
INFRASTRUCTURE = ("base", "registry", "positions", "scored", "contrastive")


def register(cls: type) -> type:
    """Add `cls` under `cls.name` (`Method.__init_subclass__` calls it); a second class of the
    same name from elsewhere is refused."""
    existing = REGISTRY.get(cls.name)
    if existing is not None and class_path(existing) != class_path(cls):
        raise ConfigError(f"two methods are named {cls.name!r}: {class_path(existing)} and {class_path(cls)}; "
                          "rename one (its class attribute `name`)")  # fmt: skip
    REGISTRY[cls.name] = cls
    return cls


def class_path(cls: type) -> str:
    """'module.Class', what a config's `_target_` and an export's "class" hold."""
    return f"{cls.__module__}.{cls.__qualname__}"


def builtin_modules() -> list[str]:
    """The modules of this package that define methods."""
    package = importlib.import_module(__name__.rsplit(".", 1)[0])
    return [m.name for m in pkgutil.iter_modules(package.__path__) if m.name not in INFRASTRUCTURE]


def _import_target(target: str) -> None:
    module, _, name = target.replace(":", ".").rpartition(".")
    try:
        getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"{TARGET}={target!r} cannot be imported ({error}); put its module on the Python path "
                          "(PYTHONPATH), or install its package") from None  # fmt: skip


def method_class(name: str, target: str | None = None) -> type:
    """The class registered as `name` (module docstring: where it is looked for), or one
    ConfigError line naming the methods there are."""
    if name not in REGISTRY and name in builtin_modules():
        importlib.import_module(f"{__name__.rsplit('.', 1)[0]}.{name}")
    if name not in REGISTRY and name in (installed := method_entry_points()):
        installed[name].load()
    if name not in REGISTRY and target:
        _import_target(target)
    if name not in REGISTRY:
        raise ConfigError(f"intervention.method={name!r} is not a method here; known: {', '.join(known_names())}"
                          + (f" (and {TARGET}={target!r} defines none of that name)" if target else ""))  # fmt: skip
    return REGISTRY[name]


def known_names() -> list[str]:
    """Every method's name: the built-in ones, the installed packages' and those registered."""
    return sorted({*builtin_modules(), *method_entry_points(), *REGISTRY})


def all_methods() -> dict[str, type]:
    """Every built-in and installed method's class, by name (imports them all)."""
    for name in known_names():
        method_class(name)
    return dict(sorted(REGISTRY.items()))


def options_from(node, prefix: str = "intervention") -> InterventionSpec:
    """A config's `intervention` node (a dict, or options already) as its method's options:
    each key known to the class, each value of its type and range (`Method.Options`'
    `__post_init__`), the sites the class supports. One ConfigError line otherwise."""
    if isinstance(node, InterventionSpec):
        return node
    node = dict(node)
    target = node.pop(TARGET, None)
    if "method" not in node:
        raise ConfigError(f"{prefix}.method is missing; name a method, e.g. {prefix}=activscalar")
    cls = method_class(node["method"], target)
    allowed = [f.name for f in fields(cls.Options)]
    unknown = [key for key in node if key not in allowed]
    if unknown:
        raise ConfigError(f"unknown key {prefix}.{unknown[0]}; allowed keys of {prefix} ({cls.name}): {', '.join(allowed)}")
    try:
        options = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls.Options), node))
    except (ValidationError, ConfigKeyError) as error:
        key = getattr(error, "key", None) or "?"
        raise ConfigError(f"{prefix}.{key}={getattr(error, 'value', '?')!r} must be {field_kind(cls.Options, key)}") from None
    cls.check_options(options)
    return options


def intervention_spec(value: "str | InterventionSpec" = "activscalar", **fields) -> InterventionSpec:
    """A method's options: `value` itself if it is options (with `fields` replaced), else the
    options of method `value` with `fields` (sites, layers, ...; init, init_scale, lr for a
    trained method; the method's own) and defaults for the rest."""
    if isinstance(value, InterventionSpec):
        return replace(value, **fields) if fields else value
    return options_from({"method": value, **fields})


def configured(config: TrainConfig) -> TrainConfig:
    """`config` with its intervention as its method's options, and what the method cannot do
    with the rest of the config refused in one line (`Method.check_run`)."""
    options = options_from(config.intervention)
    method_class(options.method).check_run(options, config)
    return replace(config, intervention=options)


def options_record(options: InterventionSpec) -> dict:
    """The options as intervention.json records them."""
    return asdict(options)


def method_label(name) -> str:
    """The display name of method `name` (its own name where it cannot be loaded here)."""
    try:
        return method_class(str(name)).display_name()
    except ConfigError:
        return str(name)


def method_color(name) -> str | None:
    """Method `name`'s colour in a sweep's plots (None: the plot's next colour)."""
    try:
        return method_class(str(name)).color
    except ConfigError:
        return None
