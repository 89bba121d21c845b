"""Parse a Prometheus text exposition (stdin) with the reference parser of
prometheus_client and print its families as JSON, for tests/tests/metrics_logs.rs.
The parser raises on anything that is not valid exposition format."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families.append(
        {
            "name": family.name,
            "type": family.type,
            "help": family.documentation,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value}
                for s in family.samples
            ],
        }
    )
json.dump(families, sys.stdout)
