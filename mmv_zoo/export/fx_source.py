"""Plain-torch source for a network that is not written in plain torch (MONAI, a user's package).

`standalone_source(model, examples)` traces `model` with torch.fx and writes a Python file that
imports only torch: its `__init__` rebuilds the model's module tree from torch.nn layers (their
constructor arguments read back from the layers, so the state dict keys and shapes are the
model's), its `forward` is the traced graph. torch.nn layers stay leaves of the trace; every other
module (MONAI blocks, containers) is traced through and becomes an empty `nn.Module` holding its
children.

The tracer also runs the model on a small example input, so code that asks a tensor for its rank
(`len(x.shape)`, `x.dim()`) or branches on sizes can be traced: such a branch takes the example's
way. The source is accepted only when traces at two different valid input sizes give the same code
(no input size is baked in) and the rebuilt module, fed the model's state dict strictly, reproduces
the model on every example; anything else raises NotTraceable with the reason.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import inspect
import traceback
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

TOLERANCE = 1e-5
"""Largest accepted difference between the rebuilt and the original model, relative to max |output|."""

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)

ATTACH = '''

def _attach(root: nn.Module, path: str, child: nn.Module) -> None:
    """Put `child` at the dotted `path` below `root`, adding empty modules for missing parents."""
    *parents, name = path.split(".")
    for part in parents:
        if part not in root._modules:
            root.add_module(part, nn.Module())
        root = root._modules[part]
    root.add_module(name, child)
'''

TENSOR = '''

def _tensor(root: nn.Module, path: str, shape: tuple, dtype: torch.dtype, kind: str) -> None:
    """A parameter or buffer of `shape` at `path` (its values come with the state dict)."""
    *parents, name = path.split(".")
    for part in parents:
        if part not in root._modules:
            root.add_module(part, nn.Module())
        root = root._modules[part]
    value = torch.zeros(shape, dtype=dtype)
    if kind == "parameter":
        root.register_parameter(name, nn.Parameter(value, requires_grad=value.is_floating_point()))
    else:
        root.register_buffer(name, value, persistent=kind == "buffer")
'''


class NotTraceable(Exception):
    """The model cannot be written as plain torch source (the message says why)."""


def standalone_source(model: nn.Module, examples: Sequence[torch.Tensor], class_name: str = "ExportedModel",
                      title: str = "") -> str:
    """Plain-torch Python source defining `class_name`, a no-argument module equivalent to `model`.

    `examples` are valid inputs of at least two different spatial sizes where the model accepts
    more than one; the first two are traced, all are used to check the rebuilt module.
    """
    if not examples:
        raise NotTraceable("no example inputs")
    training = model.training
    try:
        with torch.no_grad():
            model.eval()  # traced as used for inference: dropout off, batch norm with running statistics
            code, prelude, guards = _traced_forward(model, examples[0])
            if len(examples) > 1 and examples[1].shape != examples[0].shape:
                other, other_prelude, _ = _traced_forward(model, examples[1])
                if (other, other_prelude) != (code, prelude):
                    raise NotTraceable("the traced code depends on the input size (a size is baked into the graph)")
            source = _module_source(model, code, prelude, class_name, title, guards)
            _check(model, source, class_name, examples)
    finally:
        model.train(training)
    return source


# ---------------------------------------------------------------- tracing


class _Proxy(fx.Proxy):
    """A proxy that knows its value on the example input: lengths and rank are answered from it."""

    def __getattr__(self, name: str) -> Any:
        if name == "ndim":  # the rank does not depend on the input size
            value = self.tracer.value_of(self)  # type: ignore[attr-defined]
            if isinstance(value, torch.Tensor):
                return value.ndim
        return _Attribute(self, name)

    def __len__(self) -> int:
        value = self.tracer.value_of(self)  # type: ignore[attr-defined]
        if isinstance(value, (tuple, list, torch.Size)):
            return len(value)
        raise NotTraceable(f"len() of {type(value).__name__} {self.node.name} (only shapes have a traceable length)")

    def __index__(self) -> int:
        value = self.tracer.value_of(self)  # type: ignore[attr-defined]
        if isinstance(value, int) and not isinstance(value, bool):
            self.tracer.guards.append(f"{self.node.name} == {value}")  # type: ignore[attr-defined]
            return value
        raise NotTraceable(f"{self.node.name} is used as an integer but is a {type(value).__name__}")


class _Attribute(fx.proxy.Attribute, _Proxy):
    pass


class _ConcreteTracer(fx.Tracer):
    """torch.fx tracer with torch.nn layers as leaves that also runs every node on an example input."""

    def __init__(self, example: torch.Tensor) -> None:
        super().__init__()
        self.example = example
        self.values: dict[fx.Node, Any] = {}
        self.guards: list[str] = []
        self._concrete = 0

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return _is_layer(m)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def create_proxy(self, kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                     name: str | None = None, type_expr: Any = None, proxy_factory_fn: Any = None) -> fx.Proxy:
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        try:
            self.values[proxy.node] = self._run(kind, target, args, kwargs)
        except NotTraceable:
            raise
        except Exception as e:  # the value is only needed if control flow asks for it
            self.values[proxy.node] = _Unknown(f"{type(e).__name__}: {e}")
        return proxy

    def value_of(self, proxy: fx.Proxy) -> Any:
        value = self.values.get(proxy.node)
        if isinstance(value, _Unknown):
            raise NotTraceable(f"cannot evaluate {proxy.node.name} on the example input ({value.reason})")
        return value

    def to_bool(self, obj: fx.Proxy) -> bool:
        value = self.value_of(obj)
        if isinstance(value, torch.Tensor):
            raise NotTraceable(f"the forward branches on the tensor values of {obj.node.name}")
        self.guards.append(f"bool({obj.node.name}) is {bool(value)}")
        return bool(value)

    def iter(self, obj: fx.Proxy) -> Iterator[Any]:
        value = self.value_of(obj)
        if isinstance(value, (tuple, list, torch.Size)):
            return iter([obj[i] for i in range(len(value))])
        raise NotTraceable(f"the forward iterates over {obj.node.name}, a {type(value).__name__}")

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        return attr_val if self._concrete else super().getattr(attr, attr_val, parameter_proxy_cache)

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return forward(*args, **kwargs) if self._concrete else super().call_module(m, forward, args, kwargs)

    @contextlib.contextmanager
    def concrete(self) -> Iterator[None]:
        self._concrete += 1
        try:
            yield
        finally:
            self._concrete -= 1

    def _run(self, kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kind == "placeholder":
            return self.example
        if kind == "output":
            return None
        args, kwargs = fx.node.map_aggregate((args, kwargs), self._value)  # type: ignore[misc]
        with self.concrete():
            if kind == "call_function":
                return target(*args, **kwargs)
            if kind == "call_method":
                return getattr(args[0], target)(*args[1:], **kwargs)
            if kind == "call_module":
                return self.root.get_submodule(target)(*args, **kwargs)
            if kind == "get_attr":
                value: Any = self.root
                for part in target.split("."):
                    value = getattr(value, part)
                return value
        raise NotTraceable(f"unknown node kind {kind}")

    def _value(self, a: Any) -> Any:
        return self.value_of(a) if isinstance(a, fx.Proxy) else a

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        original = torch.jit.isinstance

        def isinstance_(obj: Any, target_type: Any) -> bool:  # MONAI guards optional inputs with it
            if isinstance(obj, fx.Proxy):
                return original(self.value_of(obj), target_type)
            return original(obj, target_type)

        torch.jit.isinstance = isinstance_
        try:
            return super().trace(root, concrete_args)
        finally:
            torch.jit.isinstance = original


class _Unknown:
    def __init__(self, reason: str) -> None:
        self.reason = reason[:200]


def _is_layer(m: nn.Module) -> bool:
    """A torch.nn layer (rebuilt by its constructor), not a container and not a third-party module."""
    module = type(m).__module__
    return module.startswith(("torch.nn.", "torch.ao.nn.")) and not isinstance(m, CONTAINERS)


def _traced_forward(model: nn.Module, example: torch.Tensor) -> tuple[str, list[str], list[str]]:
    """From a trace on `example`: the forward method's source, the top-level lines defining the globals
    it uses, and the size branches it took."""
    tracer = _ConcreteTracer(example)
    try:
        graph = tracer.trace(model)
    except NotTraceable:
        raise
    except Exception as e:
        raise NotTraceable(f"torch.fx cannot trace the forward{_where(e)} ({type(e).__name__}: {str(e)[:200]})") \
            from None
    _drop_unused_size_arithmetic(graph, tracer.values)
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise NotTraceable(f"the forward takes {len(inputs)} inputs; one image tensor is supported")
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            node.type = None
        if node.op == "get_attr" and not _is_state(model, node.target):
            raise NotTraceable(f"the forward uses {node.target}, a tensor that is neither a parameter nor a buffer")
    python = graph.python_code(root_module="self")
    # fx marks wrapped functions (math.sqrt, ...) for re-tracing the code; plain Python needs no mark
    src = "\n".join(line for line in python.src.splitlines() if not line.startswith("torch.fx._symbolic_trace.wrap("))
    return src, _globals(src, python.globals), tracer.guards


def _where(e: BaseException) -> str:
    """` at package/module.py:line` of the innermost frame outside torch and this file, if any."""
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        path = Path(frame.filename)
        if "torch" not in path.parts and path.name != Path(__file__).name:
            site = next((i for i, part in enumerate(path.parts) if part in ("site-packages", "dist-packages")), None)
            short = "/".join(path.parts[site + 1:] if site is not None else path.parts[-2:])
            return f" at {short}:{frame.lineno}"
    return ""


def _drop_unused_size_arithmetic(graph: fx.Graph, values: dict[fx.Node, Any]) -> None:
    """Remove unused nodes that computed sizes or flags (left over from branches taken at trace time)."""
    changed = True
    while changed:
        changed = False
        for node in reversed(graph.nodes):
            if node.op in ("call_function", "call_method") and not node.users \
                    and not isinstance(values.get(node), (torch.Tensor, _Unknown, type(None))):
                graph.erase_node(node)
                changed = True


def _is_state(model: nn.Module, target: str) -> bool:
    names = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    return target in names


CONSTANTS = {"inf": 'inf = float("inf")', "nan": 'nan = float("nan")', "device": "device = torch.device"}
"""Definitions of the constants fx writes as globals, for the file's top."""
STDLIB = ("math", "operator")
"""Modules besides torch whose functions the traced code may call (fx wraps e.g. math.sqrt)."""


def _globals(code: str, known: dict[str, Any]) -> list[str]:
    """Top-level lines defining the globals `code` uses beyond torch and builtins; NotTraceable for a
    function from another package (the code would need it installed)."""
    tree = ast.parse(code)
    assigned = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    assigned |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    imports, lines, foreign = set(), [], []
    for name in sorted(used - assigned - {"self", "torch"}):
        obj = known.get(name)
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
        if name in CONSTANTS:
            lines.append(CONSTANTS[name])
        elif hasattr(builtins, name) and (obj is None or obj is getattr(builtins, name)):
            continue
        elif module in STDLIB and getattr(__import__(module), qualname, None) is obj:
            imports.add(f"import {module}")
            lines.append(f"{name} = {module}.{qualname}")
        elif (module or "").split(".")[0] == "torch" and _torch_path(obj):
            lines.append(f"{name} = {_torch_path(obj)}")
        else:
            foreign.append(f"{name} ({module or type(obj).__name__})")
    if foreign:
        raise NotTraceable(f"the traced code calls {', '.join(foreign)}, which is not part of torch")
    return sorted(imports) + lines


def _torch_path(obj: Any) -> str | None:
    """`torch.x.y` naming `obj` if that public path leads to it."""
    path = f"{obj.__module__}.{obj.__qualname__}"
    value: Any = torch
    for part in path.split(".")[1:]:
        value = getattr(value, part, None)
    return path if value is obj else None


# ---------------------------------------------------------------- source


def _module_source(model: nn.Module, forward: str, prelude_lines: list[str], class_name: str, title: str,
                   guards: list[str]) -> str:
    init = list(_init_lines(model))
    stdlib = "".join(line + "\n" for line in prelude_lines if line.startswith("import "))
    prelude = "".join("\n" + line for line in prelude_lines if not line.startswith("import "))
    prelude += "\n" if prelude else ""
    body = "\n".join("        " + line for line in init) or "        pass"
    helpers = (ATTACH if any(line.startswith("_attach(") for line in init) else "") + \
        (TENSOR if any(line.startswith("_tensor(") for line in init) else "")
    note = (f"\nSize-dependent branches: the original forward branches {len(guards)} time(s) on input sizes; the\n"
            "code keeps the way valid input sizes take (the same when traced at two sizes).\n" if guards else "")
    doc = (f'"""{title or type(model).__name__ + " as plain torch"}\n\n'
           "Generated by mmv_zoo from a torch.fx trace: `__init__` rebuilds the module tree from torch.nn\n"
           "layers, so the trained state dict loads strictly; `forward` is the traced computation.\n"
           f"Needs only torch.\n{note}\"\"\"\n")
    forward_body = "\n".join(("    " + line) if line.strip() else "" for line in forward.strip("\n").splitlines())
    return (f"{doc}\nfrom __future__ import annotations\n\n{stdlib + chr(10) if stdlib else ''}"
            "import torch\nfrom torch import nn\n"
            f"{prelude}{helpers}\n\nclass {class_name}(nn.Module):\n"
            '    """The network rebuilt from torch.nn layers; takes no arguments."""\n\n'
            f"    def __init__(self) -> None:\n        super().__init__()\n{body}\n\n"
            f"{forward_body.rstrip()}\n")


def _init_lines(model: nn.Module, prefix: str = "") -> Iterator[str]:
    """Statements (for `__init__`, `self` being the model) that rebuild the module tree below `model`."""
    for kind, tensors in (("parameter", model._parameters), ("buffer", model._buffers)):
        for name, t in tensors.items():
            if t is None:
                continue
            if kind == "buffer" and name in model._non_persistent_buffers_set:
                raise NotTraceable(f"{prefix}{name}: a non-persistent buffer (its values are not in the state dict)")
            yield f'_tensor(self, "{prefix}{name}", {tuple(t.shape)}, {t.dtype}, "{kind}")'
    for name, child in model._modules.items():
        if child is None:
            raise NotTraceable(f"{prefix}{name}: an empty submodule slot")
        if _is_layer(child):
            yield f'_attach(self, "{prefix}{name}", {_constructor(child, prefix + name)})'
        else:
            yield from _init_lines(child, f"{prefix}{name}.")


def _constructor(layer: nn.Module, path: str) -> str:
    """`nn.Layer(args)`: the constructor call that rebuilds `layer`, checked by rebuilding it.

    Arguments equal to their default are left out and tuples of one repeated value written as that
    value (`kernel_size=3`), unless the layer then comes out different.
    """
    cls = type(layer)
    if getattr(nn, cls.__name__, None) is not cls:
        raise NotTraceable(f"{path}: {cls.__module__}.{cls.__name__} is not a public torch.nn layer")
    values: list[tuple[inspect.Parameter, Any]] = []
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in ("device", "dtype"):
            continue
        if not hasattr(layer, p.name):
            if p.default is p.empty:
                raise NotTraceable(f"{path}: {cls.__name__} does not keep its argument {p.name!r}")
            continue
        value = getattr(layer, p.name)
        if isinstance(p.default, bool) and (value is None or isinstance(value, torch.Tensor)):
            value = value is not None  # e.g. bias=True stored as a Parameter
        if isinstance(value, torch.Tensor) or not _is_literal(value):
            raise NotTraceable(f"{path}: {cls.__name__}.{p.name} = {type(value).__name__} cannot be written as code")
        values.append((p, value))
    want = _layer_state(layer)
    for compact in (True, False):
        args, kwargs = _arguments(values, compact)
        if _rebuilds(cls.__name__, args, kwargs, want):
            for name in list(kwargs):  # leave out what makes no difference (e.g. bias of an affine-free norm)
                fewer = {k: v for k, v in kwargs.items() if k != name}
                if _rebuilds(cls.__name__, args, fewer, want):
                    kwargs = fewer
            return _call(cls.__name__, args, kwargs)
    raise NotTraceable(f"{path}: {_call(cls.__name__, args, kwargs)} does not rebuild the layer ({layer!r})")


def _arguments(values: list[tuple[inspect.Parameter, Any]], compact: bool) -> tuple[list[str], dict[str, str]]:
    args, kwargs = [], {}
    for p, value in values:
        if compact and isinstance(value, tuple) and value and all(v == value[0] for v in value):
            value = value[0]
        if p.default is p.empty:
            args.append(repr(value))
        elif not (type(value) is type(p.default) and value == p.default):
            kwargs[p.name] = repr(value)
    return args, kwargs


def _call(name: str, args: list[str], kwargs: dict[str, str]) -> str:
    return f"nn.{name}({', '.join(args + [f'{k}={v}' for k, v in kwargs.items()])})"


def _rebuilds(name: str, args: list[str], kwargs: dict[str, str], want: tuple[Any, ...]) -> bool:
    """Whether the call builds a layer with the attributes and state shapes `want` (built on meta)."""
    try:
        with torch.device("meta"):
            rebuilt = eval(_call(name, args, kwargs), {"nn": nn})  # noqa: S307 - literal-only arguments
    except Exception:
        return False
    return _layer_state(rebuilt) == want


def _is_literal(value: Any) -> bool:
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


def _layer_state(layer: nn.Module) -> tuple[Any, ...]:
    public = {k: v for k, v in vars(layer).items() if not k.startswith("_") and k != "training"}
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in layer.state_dict().items()}
    return type(layer), public, shapes


# ---------------------------------------------------------------- check


def _check(model: nn.Module, source: str, class_name: str, examples: Sequence[torch.Tensor]) -> None:
    """Execute `source`, load the model's state dict strictly and compare outputs on every example."""
    module = types.ModuleType("mmv_zoo_fx_check")
    try:
        exec(compile(source, "<generated architecture>", "exec"), module.__dict__)  # noqa: S102
        rebuilt = getattr(module, class_name)().eval()
        rebuilt.load_state_dict(model.state_dict(), strict=True)
    except Exception as e:
        raise NotTraceable(f"the generated source does not rebuild the model ({type(e).__name__}: "
                           f"{str(e)[:300]})") from None
    for x in examples:
        try:
            got, want = rebuilt(x), model(x)
        except Exception as e:
            raise NotTraceable(f"the generated source fails on input shape {tuple(x.shape)} "
                               f"({type(e).__name__}: {str(e)[:200]})") from None
        if not isinstance(want, torch.Tensor) or not isinstance(got, torch.Tensor) or got.shape != want.shape:
            raise NotTraceable(f"the generated source gives a different output on input shape {tuple(x.shape)}")
        diff = float((got - want).abs().max()) / max(1.0, float(want.abs().max()))
        if not diff <= TOLERANCE:
            raise NotTraceable(f"the generated source differs from the model by {diff:.3g} on input shape "
                               f"{tuple(x.shape)}")

