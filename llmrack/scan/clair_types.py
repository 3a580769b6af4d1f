"""The parts of Clair v4's HTTP API (indexer + matcher, `/indexer/api/v1`, `/matcher/api/v1`) this gate uses.

Shapes follow Clair's published OpenAPI document and JSON schemas (quay/clair `httptransport/api/v1`,
`httptransport/types/v1/*.schema.json`). Unknown fields are ignored so a newer Clair still parses; ids are
strings in current Clair and integers in old releases, so numbers are coerced to strings.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class _ClairModel(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class Severity(StrEnum):
    """Clair's normalized severities, lower-cased for the policy file; ordered from least to most severe."""

    unknown = "unknown"
    negligible = "negligible"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    @classmethod
    def from_clair(cls, value: str) -> Severity:
        """Clair writes "Critical", "High", ... ("Unknown" when the source gave none)."""
        try:
            return cls(value.strip().lower())
        except ValueError:
            return cls.unknown


# --- what we send ---------------------------------------------------------------------------------------


class Layer(BaseModel):
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    uri: str
    headers: dict[str, list[str]] = {}
    media_type: str | None = None


class Manifest(BaseModel):
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    layers: list[Layer]


# --- what we read ---------------------------------------------------------------------------------------


class Package(_ClairModel):
    id: str = ""
    name: str
    version: str = ""
    kind: str = ""
    arch: str = ""
    source: Package | None = None


class Distribution(_ClairModel):
    id: str = ""
    did: str = ""
    name: str = ""
    version: str = ""
    version_id: str = ""
    pretty_name: str = ""


class Environment(_ClairModel):
    package_db: str = ""
    introduced_in: str = ""
    distribution_id: str = ""


class Vulnerability(_ClairModel):
    id: str
    updater: str = ""
    name: str
    description: str = ""
    links: str = ""
    severity: str = ""
    normalized_severity: str
    fixed_in_version: str = ""
    package: Package | None = None
    distribution: Distribution | None = None


# Index states from claircore's indexer controller; every other state means "still working".
INDEX_FINISHED = "IndexFinished"
INDEX_ERROR = "IndexError"


class IndexReport(_ClairModel):
    manifest_hash: str
    state: str
    packages: dict[str, Package] = {}
    distributions: dict[str, Distribution] = {}
    environments: dict[str, list[Environment]] = {}
    success: bool = False
    err: str = ""


class VulnerabilityReport(_ClairModel):
    manifest_hash: str
    packages: dict[str, Package] = {}
    distributions: dict[str, Distribution] = {}
    environments: dict[str, list[Environment]] = {}
    vulnerabilities: dict[str, Vulnerability] = {}
    package_vulnerabilities: dict[str, list[str]] = {}


class ApiError(_ClairModel):
    """Clair's error body: `{"code": "not-found", "message": "..."}` (httptransport/error.go)."""

    code: str
    message: str = ""
