"""The access tables, in the same SQLite file as the registry (``AIMASS_HOME/aimass.db``).

They live on their own declarative base, created on first use by :func:`session`, so the
registry's module (``aimass.store.db``) needs no change to carry them.
"""

from __future__ import annotations

from sqlalchemy import JSON, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aimass.store import db
from aimass.store.db import now


class AccessBase(DeclarativeBase):
    type_annotation_map = {dict: JSON, list: JSON}


class UserRecord(AccessBase):
    __tablename__ = "access_users"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    created: Mapped[str] = mapped_column(String(32), default=now)


class GroupRecord(AccessBase):
    __tablename__ = "access_groups"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    created: Mapped[str] = mapped_column(String(32), default=now)


class MembershipRecord(AccessBase):
    __tablename__ = "access_memberships"
    group: Mapped[str] = mapped_column(String(100), primary_key=True)
    user: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)


class ProjectRecord(AccessBase):
    __tablename__ = "access_projects"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    created: Mapped[str] = mapped_column(String(32), default=now)


class PolicyRecord(AccessBase):
    __tablename__ = "access_policies"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="identity")  # identity | resource
    document: Mapped[dict] = mapped_column(default=dict)
    managed: Mapped[bool] = mapped_column(default=False)
    description: Mapped[str] = mapped_column(String(1000), default="")
    created: Mapped[str] = mapped_column(String(32), default=now)
    updated: Mapped[str] = mapped_column(String(32), default=now)

    def to_dict(self) -> dict:
        keys = ("name", "kind", "managed", "description", "document", "created", "updated")
        return {k: getattr(self, k) for k in keys}


class AttachmentRecord(AccessBase):
    """A policy attached to a user, group or key (identity) or a project or resource ARN (resource)."""

    __tablename__ = "access_attachments"
    __table_args__ = (UniqueConstraint("policy", "target_type", "target"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    policy: Mapped[str] = mapped_column(String(128), index=True)
    target_type: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(400), index=True)
    created: Mapped[str] = mapped_column(String(32), default=now)


class OwnerRecord(AccessBase):
    """Which project a model, dataset or service belongs to (none listed: ``default``)."""

    __tablename__ = "access_owners"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), index=True)


class KeyBindingRecord(AccessBase):
    """An API key's user, project and tags (a key without one keeps acting by its scopes)."""

    __tablename__ = "access_keys"
    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    project: Mapped[str | None] = mapped_column(String(100), nullable=True)
    tags: Mapped[dict] = mapped_column(default=dict)


class AuditRecord(AccessBase):
    __tablename__ = "access_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[str] = mapped_column(String(32), default=now, index=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True, default="")
    principal: Mapped[str] = mapped_column(String(200), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    resource: Mapped[str] = mapped_column(String(400))
    decision: Mapped[str] = mapped_column(String(16), index=True)
    matched: Mapped[list] = mapped_column(default=list)
    detail: Mapped[dict] = mapped_column(default=dict)
    source: Mapped[str] = mapped_column(String(16), default="rest")

    def to_dict(self) -> dict:
        keys = (
            "id",
            "time",
            "request_id",
            "principal",
            "action",
            "resource",
            "decision",
            "matched",
            "source",
        )
        return {k: getattr(self, k) for k in keys}


def session():
    """A session on the registry's database, with the access tables created."""
    return db.session_with(AccessBase.metadata)
