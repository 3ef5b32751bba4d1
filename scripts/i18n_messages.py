"""The messages a person can see, read from the code, and the gettext catalog that translates them.

    python scripts/i18n_messages.py missing   # messages without an Indonesian translation
    python scripts/i18n_messages.py update    # add them to messages.po (empty msgstr)
    python scripts/i18n_messages.py compile   # messages.po -> messages.mo (committed)

A message is the text given to what shows it: the error types (APIError, error_response, the
ServiceError and DomainError kinds, LinkError, the pipeline's StepFailure), login's `msg`, a
success answer's `message`, and what is written to a job's `error_message` / `proofread_note`. The text is followed through
local variables, module constants, tables a loop returns from, `{...}.get()` and the return
values of helper functions; an f-string's values become `{name}` placeholders. Text that cannot
be followed (`str(exc)`) comes from another such sink, where it is collected.
"""
from __future__ import annotations

import ast
import functools
import io
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PO_FILE = ROOT / "translations" / "id" / "LC_MESSAGES" / "messages.po"
MO_FILE = PO_FILE.with_suffix(".mo")

# Call name -> position of the message argument (a keyword `message=` works too).
MESSAGE_CALLS = {"APIError": 1, "error_response": 1, "StepFailure": 1, "ServiceError": 0,
                 "AudioError": 0, "FetchError": 0, "PandocError": 0, "ProofreadError": 0,
                 "TranscriptionError": 0, "DomainError": 0, "InvalidInput": 0, "Conflict": 0,
                 "StorageUnavailable": 0, "LinkError": 0,
                 "WebhookURLError": 0, "ModelError": 0}
# Keywords (any call but the error log's row) and attributes that hold a shown message.
MESSAGE_FIELDS = {"error_message", "proofread_note", "msg"}
NOT_SHOWN_CALLS = {"ErrorLog"}  # the admins' diagnostic log keeps upstream text as it came
# Builtins whose argument names the value better than the call does: int(seconds) -> seconds.
_WRAPPERS = {"int", "float", "round", "str", "len", "repr", "abs", "max", "min", "describe",
             "format_hms", "human_size", "storable_text"}


def _call_name(node: ast.AST) -> str | None:
    func = node.func if isinstance(node, ast.Call) else None
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _placeholder(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id.strip("_") or "value"
    if isinstance(node, ast.Attribute):
        return node.attr.strip("_") or "value"
    if isinstance(node, ast.Call):
        name = _call_name(node)
        if name in _WRAPPERS and node.args:
            return _placeholder(node.args[0])
        return (name or "value").strip("_") or "value"
    if isinstance(node, (ast.BinOp,)):
        return _placeholder(node.left)
    if isinstance(node, ast.Subscript):
        return _placeholder(node.value)
    if isinstance(node, ast.BoolOp):
        return _placeholder(node.values[0])
    return "value"


class _Module:
    def __init__(self, path: Path):
        self.path = path
        self.tree = ast.parse(path.read_text(), str(path))
        self.constants: dict[str, ast.AST] = {}
        self.functions: dict[str, ast.FunctionDef] = {}
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        for node in self.tree.body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.constants[target.id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
                self.constants[node.target.id] = node.value
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(node.name, node)

    def enclosing_function(self, node: ast.AST) -> ast.AST | None:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node
        return None


class MessageScanner:
    def __init__(self, paths: list[Path]):
        self.modules = [_Module(p) for p in paths]
        self.nested: set[str] = set()
        self.constants: dict[str, tuple[_Module, ast.AST]] = {}
        self.functions: dict[str, tuple[_Module, ast.FunctionDef]] = {}
        for module in self.modules:
            for name, value in module.constants.items():
                self.constants.setdefault(name, (module, value))
            for name, func in module.functions.items():
                self.functions.setdefault(name, (module, func))

    # -- following a value to its texts ----------------------------------------------------------

    def texts(self, module: _Module, node: ast.AST, scope: ast.AST | None, depth: int = 0
              ) -> set[str]:
        if depth > 6 or node is None:
            return set()
        follow = lambda n, s=scope, m=module: self.texts(m, n, s, depth + 1)  # noqa: E731
        if isinstance(node, ast.Constant):
            return {node.value} if isinstance(node.value, str) else set()
        if isinstance(node, ast.JoinedStr):
            results, names = {""}, defaultdict(int)
            for part in node.values:
                if isinstance(part, ast.Constant):
                    pieces = {str(part.value)}
                else:
                    name = _placeholder(part.value)
                    names[name] += 1
                    pieces = {"{" + name + (f"_{names[name]}" if names[name] > 1 else "") + "}"}
                    if _call_name(part.value) in self.functions and \
                            _call_name(part.value) not in _WRAPPERS:
                        # A helper's text inside a sentence is a message of its own (it is
                        # translated as the placeholder's value).
                        self.nested |= follow(part.value)
                results = {r + p for r in results for p in pieces}
            return results
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = follow(node.left), follow(node.right)
            return {a + b for a in left for b in right}
        if isinstance(node, ast.IfExp):
            return follow(node.body) | follow(node.orelse)
        if isinstance(node, ast.BoolOp):
            return set().union(*(follow(v) for v in node.values))
        if isinstance(node, (ast.Tuple, ast.List)) and node.elts:
            return follow(node.elts[-1])  # a (needle, message) row of a table
        if isinstance(node, ast.Dict):
            return set().union(set(), *(follow(v) for v in node.values))
        if isinstance(node, ast.Name):
            return self._name_texts(module, node.id, scope, depth)
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name == "get" and isinstance(node.func, ast.Attribute):  # {..}.get(k, default)
                found = follow(node.func.value)
                return found | (follow(node.args[1]) if len(node.args) > 1 else set())
            if name in self.functions and name not in _WRAPPERS:
                owner, func = self.functions[name]
                return set().union(set(), *(self.texts(owner, r.value, func, depth + 1)
                                            for r in ast.walk(func)
                                            if isinstance(r, ast.Return) and r.value is not None))
        return set()

    def _name_texts(self, module: _Module, name: str, scope: ast.AST | None, depth: int) -> set[str]:
        found: set[str] = set()
        if scope is not None:
            for node in ast.walk(scope):
                if isinstance(node, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == name for t in node.targets):
                    found |= self.texts(module, node.value, scope, depth + 1)
                elif isinstance(node, ast.For) and isinstance(node.target, ast.Tuple):
                    # `for needle, message in TABLE: return message`
                    names = [t.id if isinstance(t, ast.Name) else None for t in node.target.elts]
                    if name in names:
                        found |= self._table_column(module, node.iter, names.index(name), depth)
            args = getattr(scope, "args", None)
            if args is not None and any(a.arg == name for a in args.args + args.kwonlyargs):
                found |= self._argument_texts(scope, name, depth)
        if not found and name in module.constants:
            found = self.texts(module, module.constants[name], None, depth + 1)
        if not found and name in self.constants:
            owner, value = self.constants[name]
            found = self.texts(owner, value, None, depth + 1)
        return found

    def _table_column(self, module: _Module, table: ast.AST, column: int, depth: int) -> set[str]:
        if isinstance(table, ast.Name):
            owner, value = ((module, module.constants[table.id]) if table.id in module.constants
                            else self.constants.get(table.id, (module, None)))
            if isinstance(value, (ast.Tuple, ast.List)):
                return set().union(set(), *(
                    self.texts(owner, row.elts[column], None, depth + 1) for row in value.elts
                    if isinstance(row, (ast.Tuple, ast.List)) and len(row.elts) > column))
        return set()

    def _argument_texts(self, func: ast.AST, name: str, depth: int) -> set[str]:
        """A helper's parameter: the texts its callers pass (`_keep(..., empty_message="...")`)."""
        params = [a.arg for a in func.args.args]
        position = params.index(name) if name in params else None
        found: set[str] = set()
        for module in self.modules:
            for call in ast.walk(module.tree):
                if isinstance(call, ast.Call) and _call_name(call) == func.name:
                    for keyword in call.keywords:
                        if keyword.arg == name:
                            found |= self.texts(module, keyword.value,
                                                module.enclosing_function(call), depth + 1)
                    if position is not None and position < len(call.args):
                        found |= self.texts(module, call.args[position],
                                            module.enclosing_function(call), depth + 1)
        return found

    # -- the sinks ------------------------------------------------------------------------------

    def messages(self) -> dict[str, list[str]]:
        """Every message -> where it is shown ("file:line")."""
        found: dict[str, list[str]] = defaultdict(list)
        for module in self.modules:
            for node in ast.walk(module.tree):
                for value in self._sink_values(node):
                    scope = module.enclosing_function(node)
                    for text in self.texts(module, value, scope):
                        text = text.strip() if text.strip() != text else text
                        if _is_message(text):
                            found[text].append(f"{module.path.relative_to(ROOT)}:{node.lineno}")
                    for text in self.nested:
                        if _is_message(text):
                            found[text].append(f"{module.path.relative_to(ROOT)}:{node.lineno}")
                    self.nested = set()
        return dict(sorted(found.items()))

    def _sink_values(self, node: ast.AST) -> list[ast.AST]:
        values = []
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name in MESSAGE_CALLS:
                position = MESSAGE_CALLS[name]
                if len(node.args) > position:
                    values.append(node.args[position])
                values += [k.value for k in node.keywords if k.arg == "message"]
            if name not in NOT_SHOWN_CALLS:
                values += [k.value for k in node.keywords if k.arg in MESSAGE_FIELDS]
            if name == "jsonify":  # a success answer's `message`, as keyword or dict entry
                values += [k.value for k in node.keywords if k.arg == "message"]
                values += [value for arg in node.args for d in ast.walk(arg)
                           if isinstance(d, ast.Dict)
                           for key, value in zip(d.keys, d.values)
                           if isinstance(key, ast.Constant) and key.value == "message"]
        elif isinstance(node, ast.Assign):
            values += [node.value for t in node.targets
                       if isinstance(t, ast.Attribute) and t.attr in MESSAGE_FIELDS]
        return values


def _is_message(text: str) -> bool:
    """Words a person reads, not only placeholders and punctuation."""
    import re
    return bool(re.search(r"[A-Za-z]{2}", re.sub(r"\{[A-Za-z_][A-Za-z0-9_]*\}", "", text)))


def source_files() -> list[Path]:
    return sorted(p for p in ROOT.glob("*.py") if p.name not in {"openapi.py"})


@functools.cache  # one scan per process (the tests ask twice)
def code_messages() -> dict[str, list[str]]:
    return MessageScanner(source_files()).messages()


def read_catalog(path: Path = PO_FILE):
    from babel.messages.pofile import read_po
    with path.open("rb") as handle:
        return read_po(handle, locale=path.parent.parent.name)


def missing_translations(language_catalog=None) -> list[str]:
    catalog = language_catalog or read_catalog()
    return [text for text in code_messages()
            if catalog.get(text) is None or not catalog.get(text).string
            or catalog.get(text).fuzzy]


def compiled(catalog) -> bytes:
    from babel.messages.mofile import write_mo
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    return buffer.getvalue()


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "missing"
    if command == "missing":
        missing = missing_translations()
        for text in missing:
            print(text)
        return 1 if missing else 0
    if command == "update":
        from babel.messages.pofile import write_po
        catalog = read_catalog()
        for text, places in code_messages().items():
            if catalog.get(text) is None:
                catalog.add(text, "", flags=("python-brace-format",) if "{" in text else ())
        buffer = io.BytesIO()  # no source locations: they would change with every edit
        write_po(buffer, catalog, width=100, sort_output=True, no_location=True,
                 omit_header=False)
        PO_FILE.write_bytes(buffer.getvalue())
        return 0
    if command == "compile":
        MO_FILE.write_bytes(compiled(read_catalog()))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv))
