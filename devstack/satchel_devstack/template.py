"""`${NAME}` substitution of the gateway templates for `make run`, strict about missing names.
The gateway image renders the same templates with the same rule in gateway/docker-entrypoint.sh
(no Python there); tests-infra/test_gateway_image.py checks that both give the same config."""
from __future__ import annotations

import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


def render(template: str, values: Mapping[str, str]) -> str:
    missing = sorted({name for name in _PLACEHOLDER.findall(template) if name not in values})
    if missing:
        raise KeyError(f"template needs values for: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), template)
