"""How an auth method and its params are chosen for a session, and how a profile's ``[auth]`` table is checked.

The rule (documented in docs/plugins.md, "How auth params reach a method"):

- A method's params come only from a profile's ``[auth]`` table (``method`` plus that method's params), validated
  by the method's ``params_model``. ``create_session(profile=P)`` logs in with P's method.
- ``create_session(auth=M)`` without a profile is allowed only when every param of M has a default; otherwise it is
  an error that says to put the params in a profile.
- ``create_session(auth=M, profile=P)`` where P's ``[auth]`` names another method is an error (P's params belong
  to P's method); ``auth=`` naming P's own method is the same as leaving it out.

``crawlkeeper profiles`` and ``crawlkeeper doctor`` run the same checks without logging in (:func:`auth_problem`).
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from .errors import ConfigError, SessionError

if TYPE_CHECKING:
    from .models import AuthMethod, Profile

#: name -> (plugin that provides it, method)
Methods = dict[str, "tuple[str, AuthMethod]"]


def _unknown_method(name: str, methods: Methods, disabled: list[str], where: str) -> str:
    available = ", ".join(sorted(methods)) or "none (no enabled plugin provides one)"
    close = difflib.get_close_matches(name, sorted(methods), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    if name in disabled:
        why = f"the plugin '{name}' that provides it is disabled ([plugins] disable or CRAWLKEEPER_DISABLE_PLUGINS)"
    elif disabled:
        why = f"not installed, or its plugin is disabled (disabled plugins: {', '.join(sorted(disabled))})"
    else:
        why = "no installed plugin provides it"
    return f"{where}unknown auth method '{name}': {why}{hint}; available auth methods: {available}"


def params_problems(model: type[BaseModel], table: dict[str, Any]) -> list[str]:
    """What is wrong with ``table`` as params of a method with ``model``: ``key: reason`` strings, never values
    (params may hold secrets). Unknown keys are reported even when the model would silently ignore them."""
    problems = []
    if model.model_config.get("extra") != "allow":
        known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
        for key in sorted(set(table) - known):
            close = difflib.get_close_matches(key, sorted(known), n=1)
            problems.append(f"{key}: unknown key" + (f" (did you mean '{close[0]}'?)" if close else ""))
    try:
        model.model_validate(table)
    except ValidationError as exc:
        for err in exc.errors():
            if err["type"] == "extra_forbidden":
                continue  # reported above, with a suggestion
            key = ".".join(str(p) for p in err["loc"]) or "(the table)"
            problems.append(f"{key}: {err['msg']}")
    return problems


def required_params(model: type[BaseModel]) -> list[str]:
    return [name for name, field in model.model_fields.items() if field.is_required()]


#: ``[auth]`` keys that are crawlkeeper's own (how to tell a logged-out page), never a method's params.
OWN_KEYS = ("logged_out_url", "logged_out_status", "logged_out_selector")


def method_table(auth: dict[str, Any] | None) -> dict[str, Any]:
    """An ``[auth]`` table without crawlkeeper's own keys: ``method`` and the method's params."""
    return {k: v for k, v in (auth or {}).items() if k not in OWN_KEYS}


def auth_problem(profile: Profile, methods: Methods, disabled: list[str]) -> str | None:
    """What is wrong with ``profile``'s ``[auth]`` table, naming its file and keys, or None. Nothing is run."""
    auth = method_table(profile.auth)
    if not auth:
        return None  # no [auth], or only how to tell a logged-out page
    where = f"{profile.label} [auth] "
    name = auth.get("method")
    if not isinstance(name, str) or not name:
        return f"{where}method: give the name of an auth method"
    if name not in methods:
        return _unknown_method(name, methods, disabled, f"{where}method: ")
    method = methods[name][1]
    problems = params_problems(method.params_model, {k: v for k, v in auth.items() if k != "method"})
    if problems:
        return f"{where}invalid params for '{name}': " + "; ".join(problems)
    return None


def choose(
    auth: str | None, profile: Profile | None, methods: Methods, disabled: list[str]
) -> tuple[AuthMethod, Any] | None:
    """The method a new session logs in with and its validated params (None: no login), by the rule above.

    :raises SessionError: the call names an unknown method, or one that needs params no profile gave.
    :raises ConfigError: the profile's ``[auth]`` table is wrong (naming its file and key).
    """
    table = method_table(profile.auth) if profile else {}
    profile_method = table.pop("method", None)
    name = auth or profile_method
    if not name:
        return None
    if name not in methods:
        where = f"{profile.label} [auth] method: " if profile is not None and not auth else ""
        raise SessionError(_unknown_method(name, methods, disabled, where))
    method = methods[name][1]
    if auth and profile is not None and profile_method and profile_method != auth:
        raise SessionError(
            f"auth='{auth}' does not match {profile.label}, whose [auth] logs in with '{profile_method}' (its params "
            f"are for that method): leave auth out to use the profile's method, or use a profile whose [auth] "
            f"method is '{auth}'")
    if not profile_method:  # auth= alone (or with a profile without [auth]): only methods needing no params
        missing = required_params(method.params_model)
        if missing:
            holder = f"{profile.label} has no [auth] table" if profile is not None else "no profile was given"
            raise SessionError(
                f"auth method '{name}' needs params ({', '.join(missing)}) and {holder}: params come only from a "
                f"profile. Create profiles/<name>.toml with [auth] method = \"{name}\" and "
                f"{', '.join(missing)}, then call create_session(profile=\"<name>\")")
        table = {}
    problems = params_problems(method.params_model, table)
    if problems:
        raise ConfigError(f"{profile.label if profile else 'the call'} [auth]: invalid params for '{name}': "
                          + "; ".join(problems))
    return method, method.params_model.model_validate(table)


__all__ = ["auth_problem", "choose", "params_problems", "required_params"]
