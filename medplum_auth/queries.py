"""Query helpers for the hot paths (token, userinfo and authorization endpoints)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from django.core.exceptions import ValidationError
from django.db import connections, router
from django.db.models import Model, QuerySet, signals
from django.db.models.base import ModelState
from django.db.models.query import RelatedPopulator, get_related_populators
from django.db.transaction import TransactionManagementError

M = TypeVar("M", bound=Model)


def one_or_none(queryset: QuerySet[M]) -> M | None:
    """The row of a lookup on a unique key, or ``None``.

    Unlike ``.first()`` it adds no ``ORDER BY``: with a unique key there is nothing to order,
    and the models' default orderings (a join, for clients) only cost query compilation.
    """
    return next(iter(queryset.order_by()[:1]), None)


class CompiledLookup(Generic[M]):
    """A queryset compiled to SQL once per database, then run for given key values.

    Django compiles a queryset's SQL on every evaluation; for the seven-table Bearer lookup that
    compilation cost more CPU than the query itself. Here the SQL is built once (by the
    queryset's own compiler, so it is exactly the SQL Django would send, with the ``keys``
    filters added) and each lookup only binds the values, runs it and builds the objects the
    way Django's ``ModelIterable`` does. ``keys`` must identify at most one row.

    Instances of models that neither override ``__init__`` nor have ``pre_init``/``post_init``
    receivers are built as unpickling builds them (the loaded field values set directly, deferred
    fields absent): for the Bearer lookup's seven objects ``Model.__init__`` over every declared
    field was a tenth of a FHIR read. Any other model goes through ``Model.from_db`` as usual.
    """

    def __init__(self, model: type[M], build: Callable[[], QuerySet[M]], keys: tuple[str, ...] = ("pk",)):
        self._model = model
        self._build = build
        self._keys = keys
        self._compiled: dict[str, _Compiled] = {}

    def get(self, *values: Any) -> M | None:
        """The row whose ``keys`` equal ``values`` (in order), or ``None``."""
        db = router.db_for_read(self._model)
        compiled = self._compiled.get(db)
        if compiled is None:
            compiled = self._compiled[db] = _Compiled(self._build().using(db), self._keys)
        return compiled.run(values)


def _sentinel(field: Any, n: int) -> Any:
    internal = field.target_field.get_internal_type() if field.is_relation else field.get_internal_type()
    if internal == "UUIDField":
        return uuid.UUID(int=0x5E171E1 + n)
    if internal in ("CharField", "TextField"):
        return f"\x00compiled-lookup-sentinel-{n}"
    raise TypeError(f"CompiledLookup keys must be UUID or text fields, not {internal}")


class _Compiled:
    def __init__(self, queryset: QuerySet[Any], keys: tuple[str, ...]):
        self.db = queryset.db
        connection = connections[self.db]
        meta = queryset.model._meta
        self.fields = [meta.pk if key == "pk" else meta.get_field(key) for key in keys]
        sentinels = [_sentinel(field, n) for n, field in enumerate(self.fields)]
        query = queryset.filter(**dict(zip(keys, sentinels, strict=True))).order_by()[:1].query
        compiler = query.get_compiler(using=self.db)
        self.sql, params = compiler.as_sql()
        self.params = list(params)
        self.positions = []
        for field, sentinel in zip(self.fields, sentinels, strict=True):
            marker = field.get_db_prep_value(sentinel, connection)
            positions = [i for i, value in enumerate(params) if value == marker]
            if len(positions) != 1:
                raise ValueError(f"CompiledLookup: {field.name} must appear once among the query's parameters")
            self.positions.append(positions[0])
        self.locks = query.select_for_update
        self.converters = compiler.get_converters([s[0] for s in compiler.select[: compiler.col_count]])
        self.compiler = compiler
        klass_info = compiler.klass_info
        self.model = klass_info["model"]
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        self.span = (start, end)
        self.init_list = [f[0].target.attname for f in compiler.select[start:end]]
        self.populators = get_related_populators(klass_info, compiler.select, self.db)

    def run(self, values: tuple[Any, ...]) -> Any:
        connection = connections[self.db]
        if self.locks and connection.get_autocommit():  # as Django's own check: a lock needs a transaction
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        params = list(self.params)
        try:
            for field, position, value in zip(self.fields, self.positions, values, strict=True):
                value = field.to_python(value)
                if isinstance(value, str) and "\x00" in value:  # PostgreSQL text cannot hold NUL
                    return None
                params[position] = field.get_db_prep_value(value, connection)
        except (ValidationError, TypeError, ValueError):
            return None  # a value the column cannot hold matches no row
        with connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        if self.converters:
            row = next(iter(self.compiler.apply_converters([row], self.converters)))
        start, end = self.span
        obj = _from_db(self.model, self.db, self.init_list, row[start:end])
        for populator in self.populators:
            _populate(populator, row, obj)
        return obj


def _plain(model: type[Model]) -> bool:
    return (model.__init__ is Model.__init__ and not signals.pre_init.has_listeners(model)
            and not signals.post_init.has_listeners(model))


def _from_db(model: type[M], db: str, attnames: list[str], values: tuple[Any, ...] | list[Any]) -> M:
    """``model.from_db(db, attnames, values)``, without ``__init__`` where nothing can observe it."""
    if not _plain(model):
        return model.from_db(db, attnames, values)
    obj = model.__new__(model)
    state = ModelState()
    state.adding, state.db = False, db
    obj.__dict__["_state"] = state
    obj.__dict__.update(zip(attnames, values, strict=True))
    return obj


def _populate(populator: RelatedPopulator, row: tuple[Any, ...], from_obj: Model) -> None:
    """``RelatedPopulator.populate`` with :func:`_from_db` (same steps, Django 5.2)."""
    if populator.reorder_for_init:
        data = populator.reorder_for_init(row)
    else:
        data = row[populator.cols_start:populator.cols_end]
    if data[populator.pk_idx] is None:
        obj = None
    else:
        obj = _from_db(populator.model_cls, populator.db, populator.init_list, data)
        for nested in populator.related_populators:
            _populate(nested, row, obj)
    populator.local_setter(from_obj, obj)
    if obj is not None:
        populator.remote_setter(obj, from_obj)
