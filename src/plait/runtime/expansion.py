"""Kubernetes' ``$(VAR)`` references, expanded as the kubelet expands them (pure).

A container's ``command`` and ``args`` (and each ``env`` value, from the variables defined before it)
may name environment variables as ``$(VAR)``:

* ``$(VAR)`` with VAR defined is replaced by its value;
* ``$(VAR)`` with VAR undefined stays as it is, literally;
* ``$$`` is an escaped ``$``: ``$$(VAR)`` gives ``$(VAR)``, never expanded;
* any other ``$`` (``$VAR``, a lone ``$``, an unclosed ``$(VAR``) stays as it is — so shell
  syntax such as ``sh -c 'echo $HOME'`` reaches the shell untouched.

Expansion is one pass: a value that itself contains ``$(…)`` is not expanded again.
"""

from __future__ import annotations

from collections.abc import Mapping


def expand(text: str, variables: Mapping[str, str]) -> str:
    """`text` with every ``$(NAME)`` of a defined variable replaced, ``$$`` unescaped, all else kept."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":  # escaped operator
            out.append("$")
            i += 2
        elif following == "(" and (close := text.find(")", i + 2)) != -1:
            name = text[i + 2 : close]
            out.append(variables[name] if name in variables else f"$({name})")
            i = close + 1
        else:  # not a reference: the "$" and the character after it stay
            out.append("$" + following)
            i += 2
    return "".join(out)
