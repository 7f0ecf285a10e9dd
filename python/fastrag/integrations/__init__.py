"""Adapters that hand a `fastrag.Collection` to RAG frameworks.

* `fastrag.integrations.langchain`: a LangChain retriever and vector store
  (``pip install "fastrag-engine[langchain]"``).
* `fastrag.integrations.llama_index`: a LlamaIndex retriever
  (``pip install "fastrag-engine[llamaindex]"``).
* `fastrag.integrations.haystack`: a Haystack 2 document store and retriever component
  (``pip install "fastrag-engine[haystack]"``).

Each module imports its framework at the top (and says which extra to install when it is
missing); this package imports none of them, and ``import fastrag`` does not import this
package, so the core install stays light.
"""
