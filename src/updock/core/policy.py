"""Auto-update policies and the labels that carry them.

A container opts in with `io.containers.autoupdate=<policy>` and may name its registry
credentials with `io.containers.autoupdate.authfile=<path>`. Pods created by `podman kube play`
also carry per-container variants, `io.containers.autoupdate/<container>` and
`io.containers.autoupdate.authfile/<container>`, which win over the pod-wide value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from updock.core.model import LABEL_AUTHFILE, LABEL_POLICY, Container, Policy
from updock.errors import PolicyError

# podman's `supportedPolicies`: "" and "disabled" mean no updates, "image" is the old name of
# "registry".
_POLICIES: Mapping[str, Policy] = {
    "": Policy.DISABLED,
    "disabled": Policy.DISABLED,
    "image": Policy.REGISTRY,
    "registry": Policy.REGISTRY,
    "local": Policy.LOCAL,
}

_GO_SHORT_ESCAPES = {
    "\a": r"\a",
    "\b": r"\b",
    "\f": r"\f",
    "\n": r"\n",
    "\r": r"\r",
    "\t": r"\t",
    "\v": r"\v",
}


def go_quote(text: str, *, ascii_only: bool = False) -> str:
    """Quote a string the way Go's `strconv.Quote` (`%q`) does.

    Printable characters stay as they are, `"` and `\\` are backslash-escaped, control characters
    become `\\n`, `\\x1b`, `\\u200b` and so on. Messages built with it read exactly like podman's.

    Args:
        text: the string to quote.
        ascii_only: escape every non-ASCII character too, like `strconv.QuoteToASCII` (`%+q`).

    Returns:
        The quoted string, with the surrounding double quotes.
    """
    out = ['"']
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char.isprintable() and not (ascii_only and code >= 0x80):
            out.append(char)
        elif char in _GO_SHORT_ESCAPES:
            out.append(_GO_SHORT_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:
            # A byte that was not UTF-8, smuggled in by surrogateescape: Go prints the byte.
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(r"\ufffd")  # no valid rune: Go substitutes U+FFFD
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def lookup_policy(value: str) -> Policy:
    """Map an `io.containers.autoupdate` label value to its policy.

    Args:
        value: the label value.

    Returns:
        DISABLED for "" and "disabled", REGISTRY for "registry" and "image", LOCAL for "local".

    Raises:
        PolicyError: for any other value, with podman's exact message.
    """
    try:
        return _POLICIES[value]
    except KeyError:
        pass
    # Go prints the sorted keys with %+q: `["disabled" "image" "local" "registry"]`.
    valid = " ".join(go_quote(key, ascii_only=True) for key in sorted(_POLICIES) if key)
    raise PolicyError(f"invalid auto-update policy {go_quote(value)}: valid policies are [{valid}]")


def _names(ctr_names: str | Sequence[str]) -> Sequence[str]:
    return (ctr_names,) if isinstance(ctr_names, str) else ctr_names


def _label_for(labels: Mapping[str, str], label: str, ctr_names: str | Sequence[str]) -> str | None:
    for name in _names(ctr_names):
        value = labels.get(f"{label}/{name}")
        if value is not None:
            return value
    return labels.get(label)


def policy_label_for(labels: Mapping[str, str], ctr_names: str | Sequence[str]) -> str | None:
    """The raw policy label value that applies to a container.

    Args:
        labels: the container's labels.
        ctr_names: the container's name, or candidate names in order of preference; the first
            `io.containers.autoupdate/<name>` found wins.

    Returns:
        The per-container value if any, else the `io.containers.autoupdate` value, else None.
    """
    return _label_for(labels, LABEL_POLICY, ctr_names)


def authfile_label_for(labels: Mapping[str, str], ctr_names: str | Sequence[str]) -> str | None:
    """The authfile label value that applies to a container.

    Args:
        labels: the container's labels.
        ctr_names: the container's name, or candidate names in order of preference.

    Returns:
        `io.containers.autoupdate.authfile/<name>` if present, else
        `io.containers.autoupdate.authfile`, else None.
    """
    return _label_for(labels, LABEL_AUTHFILE, ctr_names)


def candidate_names(container: Container, yaml_name: str | None = None) -> tuple[str, ...]:
    """Names under which per-container labels of `container` may be keyed, best first.

    kube play names a container `<pod>-<container>` while the YAML (and so the label suffix)
    uses `<container>`. The pod name is not known here, so for a container in a pod every
    suffix after a `-` is a candidate, longest first: `web-app-db` also tries `app-db` and `db`.

    Args:
        container: the container.
        yaml_name: the container's name in the Kubernetes YAML, if known; it comes first.

    Returns:
        The candidate names, without duplicates.
    """
    names = [yaml_name] if yaml_name else []
    names.append(container.name)
    if container.pod_id:
        rest = container.name
        while "-" in rest:
            rest = rest.split("-", 1)[1]
            if rest:
                names.append(rest)
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class EffectiveLabels:
    """The auto-update labels that apply to one container after kube-play overrides.

    Attributes:
        policy: the raw policy value, or None when the container has no policy label.
        authfile: the authfile path, or None when no authfile label applies.
    """

    policy: str | None
    authfile: str | None


def effective_labels(container: Container, yaml_name: str | None = None) -> EffectiveLabels:
    """Resolve a container's policy and authfile labels, per-container variants first.

    kube play turns the pod's annotations into these labels when it creates the containers, and
    keeps them as annotations too; both are read (a label wins over an annotation of the same
    key, a per-container variant of either over the pod-wide value).

    Args:
        container: the container.
        yaml_name: the container's name in the Kubernetes YAML, if known.

    Returns:
        The labels that apply.
    """
    names = candidate_names(container, yaml_name)
    keys = {**container.annotations, **container.labels}
    return EffectiveLabels(
        policy=policy_label_for(keys, names),
        authfile=authfile_label_for(keys, names),
    )
