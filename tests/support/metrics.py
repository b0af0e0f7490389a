"""A Prometheus scrape, parsed: sample values by name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name for family in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, Labels], float] = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; 0 when it is absent."""
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def has(self, name: str) -> bool:
        return any(sample_name == name for sample_name, _ in self.samples)

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include these."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample_name, sample_labels), value in self.samples.items()
            if sample_name == name and wanted <= set(sample_labels)
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """The samples of `name` summed by the values of one label."""
        sums: dict[str, float] = {}
        for (sample_name, sample_labels), value in self.samples.items():
            if sample_name == name:
                key = dict(sample_labels)[label]
                sums[key] = sums.get(key, 0.0) + value
        return sums

    def label_values(self) -> set[str]:
        return {value for _, labels in self.samples for _, value in labels}
