"""Vector stores: documents cut into chunks, embedded, and searched by meaning and by words.

The Python API under OpenAI's ``/v1/vector_stores`` (:mod:`aimass.serve.vector_store_routes`):

* :mod:`aimass.retrieval.files` keeps uploaded documents (``purpose`` ``assistants``) and their text;
* :mod:`aimass.retrieval.chunks` cuts a text into overlapping windows of the encoder's tokens;
* :mod:`aimass.retrieval.lexical` scores chunks by BM25 over words (CJK by characters and pairs);
* :mod:`aimass.retrieval.stores` keeps stores, their files and chunks (in ``aimass.db``) and
  searches them: the encoder's cosine and BM25, fused by weighted reciprocal rank.
"""
