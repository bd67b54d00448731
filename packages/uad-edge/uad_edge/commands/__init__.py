"""The edge commands, one module each: ``infer`` and ``serve``. ``uad-edge`` (:mod:`uad_edge.cli`) and the full
package's ``uad`` run the same functions (``infer(argv, prog)``, ``serve(argv, prog)``)."""
