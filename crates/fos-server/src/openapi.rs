//! The OpenAPI 3 description served at `/openapi.json`.

/// OpenAPI 3.0 document of every route.
pub const OPENAPI: &str = r##"{
  "openapi": "3.0.3",
  "info": {"title": "fos", "version": "1", "description": "Foreground object search: the cut-outs of a library that fit a rectangle in a background photo."},
  "paths": {
    "/v1/search": {"post": {
      "summary": "Rank the library's cut-outs for a background, a box and a category",
      "requestBody": {"required": true, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["background", "query"],
        "properties": {
          "background": {"type": "string", "format": "binary", "description": "JPEG, PNG or WebP"},
          "query": {"$ref": "#/components/schemas/Query"}}}}}},
      "responses": {
        "200": {"description": "Ranked results", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SearchResponse"}}}},
        "400": {"$ref": "#/components/responses/Error"}, "408": {"$ref": "#/components/responses/Error"},
        "413": {"$ref": "#/components/responses/Error"}}}},
    "/v1/composite": {"post": {
      "summary": "The background with a cut-out pasted into the box (scaled to fit, bottom-aligned)",
      "requestBody": {"required": true, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["background", "query"],
        "properties": {
          "background": {"type": "string", "format": "binary"},
          "query": {"type": "object", "required": ["box", "id"], "properties": {
            "box": {"$ref": "#/components/schemas/Box"}, "id": {"type": "string"}}}}}}}},
      "responses": {
        "200": {"description": "PNG", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"},
        "408": {"$ref": "#/components/responses/Error"}, "413": {"$ref": "#/components/responses/Error"}}}},
    "/v1/categories": {"get": {"summary": "Categories of the library", "responses": {"200": {"description": "Categories",
      "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object",
        "properties": {"name": {"type": "string"}, "cutouts": {"type": "integer"}}}}}}}}}},
    "/v1/foregrounds/{id}": {"get": {"summary": "A cut-out (RGBA PNG)",
      "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
      "responses": {"200": {"description": "PNG", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        "404": {"$ref": "#/components/responses/Error"}}}},
    "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
      "type": "object", "properties": {"status": {"type": "string"}, "cutouts": {"type": "integer"}, "model": {"type": "string"}}}}}}}}},
    "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}}
  },
  "components": {
    "schemas": {
      "Box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4, "description": "[x, y, w, h] in background pixels"},
      "Query": {"type": "object", "required": ["box", "category"], "properties": {
        "box": {"$ref": "#/components/schemas/Box"},
        "category": {"type": "string"},
        "k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
        "patterns": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 100}, "minItems": 2, "maxItems": 2, "description": "[top patterns, members each]"},
        "aspect_factor": {"type": "number", "nullable": true, "default": 1.2, "description": "drop cut-outs whose aspect ratio differs from the box's by this factor or more (fos's rule, not the FOSD evaluator's absolute difference); null: no filter"},
        "rerank": {"type": "boolean", "default": false}}},
      "Hit": {"type": "object", "properties": {
        "rank": {"type": "integer"}, "id": {"type": "string"}, "path": {"type": "string"},
        "category": {"type": "string"}, "score": {"type": "number"}, "pattern": {"type": "string", "nullable": true}}},
      "SearchResponse": {"type": "object", "properties": {
        "query": {"type": "object"},
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}},
        "patterns": {"type": "array", "items": {"type": "object", "properties": {
          "pattern": {"type": "string"}, "score": {"type": "number"},
          "members": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}}}}},
        "timing_ms": {"type": "object", "additionalProperties": {"type": "number"}}}},
      "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}}}}}
    },
    "responses": {"Error": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}
  }
}"##;

#[cfg(test)]
mod tests {
    #[test]
    fn is_valid_json_naming_every_route() {
        let v: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        for p in [
            "/v1/search",
            "/v1/composite",
            "/v1/categories",
            "/v1/foregrounds/{id}",
            "/healthz",
            "/openapi.json",
        ] {
            assert!(v["paths"][p].is_object(), "{p}");
        }
    }
}
