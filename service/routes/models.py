"""/v1/models: the catalogue (saying which models are ready on this machine) and the caller's fine-tuned models."""

from __future__ import annotations

from fastapi import APIRouter, Response

from lmtune.catalogue import DEFAULT_FILE, CatalogueEntry, load_catalogue
from lmtune.model_availability import download_progress, is_ready
from lmtune.model_refs import ModelRef
from lmtune.services import delete_fine_tuned_model
from lmtune.store.fine_tuned import get_fine_tuned_model, list_fine_tuned_models
from service.deps import DbDep, OwnerDep, PresentedKey, ReadsDep, known_key
from service.errors import documented, not_found
from service.schemas import Deleted, ListResponse, ModelDownload, ModelObject, json_response

router = APIRouter(prefix="/v1/models", tags=["models"])


def _catalogue_models() -> dict[str, ModelObject]:
    created = int(DEFAULT_FILE.stat().st_mtime)
    return {name: _catalogue_model(entry, created) for name, entry in load_catalogue().items()}


def _catalogue_model(entry: CatalogueEntry, created: int) -> ModelObject:
    ref = ModelRef(entry.name, entry.source or "", builtin=entry.builtin)
    ready = is_ready(ref)
    download = None if ready else download_progress(ref)
    return ModelObject(
        id=entry.name,
        created=created,
        owned_by="lmtune",
        ready=ready,
        download=ModelDownload(**download) if download else None,
    )


@router.get("", response_model=ListResponse[ModelObject], responses=documented())
async def list_models(api_key: PresentedKey, reads: ReadsDep) -> Response:
    """Catalogue models (any of them can be a job's `model`) and this key's fine-tuned models."""

    owner, rows = await reads.run(list_fine_tuned_models, reads.db, api_key)
    known_key(owner)
    tuned = [ModelObject.of_fine_tuned(row) for row in rows]
    return json_response(ListResponse(data=[*_catalogue_models().values(), *tuned]))


@router.get("/{model_id:path}", response_model=ModelObject, responses=documented(404))
def retrieve_model(model_id: str, owner: OwnerDep, db: DbDep) -> ModelObject:
    catalogue = _catalogue_models()
    if model_id in catalogue:
        return catalogue[model_id]
    row = get_fine_tuned_model(db, model_id, owner)
    if row is None:
        raise not_found("model", model_id)
    return ModelObject.of_fine_tuned(row)


@router.delete("/{model_id:path}", response_model=Deleted, responses=documented(403, 404))
def delete_model(model_id: str, owner: OwnerDep, db: DbDep) -> Deleted:
    """Delete a fine-tuned model from the catalogue (its job's files stay until the job is removed);
    a catalogue model is 403, as OpenAI answers for a model the key does not own."""
    try:
        delete_fine_tuned_model(db, model_id, owner)
    except LookupError:
        raise not_found("model", model_id) from None
    return Deleted(id=model_id, object="model")
