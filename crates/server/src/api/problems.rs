//! The error responses of the OpenAPI document, derived from each operation's shape.
//!
//! Some refusals come from layers every handler shares rather than from the handler:
//! the JSON, path and query extractors (400, 413, 415), authentication (401), the
//! public rate limit (429) and overload (503). Listing them by hand on every
//! `#[utoipa::path]` is how they went missing, so they are added here from what an
//! operation has (a body, parameters, a bearer requirement) and the annotations list
//! only what the handler itself decides (403, 404, 409, ...). Every error response
//! is a problem document: whatever an annotation says, its content is
//! `application/problem+json` with the `Problem` schema.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response};

const PROBLEM_JSON: &str = "application/problem+json";

/// Adds the shared error responses to every operation of `api` and makes every
/// error response a problem document.
pub(crate) fn document(api: &mut OpenApi) {
    for item in api.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            document_operation(operation);
        }
    }
}

fn document_operation(operation: &mut Operation) {
    let has_body = operation.request_body.is_some();
    let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let bearer = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut shared = Vec::new();
    if has_body || has_parameters {
        shared.push(("400", "A malformed body, parameter or header value"));
    }
    if bearer {
        shared.push((
            "401",
            "No bearer token, or one that is invalid, expired, of an ended session, or (with \
             `stale_tokens = \"reject\"`) stale; `WWW-Authenticate` says which",
        ));
    } else {
        shared.push((
            "429",
            "Too many requests from this address; `Retry-After` says when to retry",
        ));
    }
    if has_body {
        shared.push(("413", "The body exceeds 64 KiB"));
        shared.push(("415", "The body is not `application/json`"));
    }
    shared.push((
        "503",
        "The server is overloaded or its store unavailable; `Retry-After` says when to retry",
    ));
    let responses = &mut operation.responses.responses;
    for (status, description) in shared {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(Response::new(description)));
    }
    for (status, response) in responses.iter_mut() {
        let is_error = status.parse::<u16>().is_ok_and(|code| code >= 400);
        if let (true, RefOr::T(response)) = (is_error, response) {
            response.content.clear();
            response.content.insert(
                PROBLEM_JSON.to_owned(),
                Content::new(Some(Ref::from_schema_name("Problem"))),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn operations() -> Vec<(String, String, Value)> {
        let api = serde_json::to_value(crate::api::openapi()).unwrap();
        let mut all = Vec::new();
        for (path, item) in api["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                all.push((method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
        assert!(all.len() > 20, "{} operations", all.len());
        all
    }

    #[test]
    fn every_operation_lists_its_shared_refusals_as_problems() {
        for (method, path, operation) in operations() {
            let responses = operation["responses"].as_object().unwrap();
            let mut expected = vec!["503"];
            if operation.get("security").is_some() {
                expected.push("401");
            } else {
                expected.push("429");
            }
            if operation.get("requestBody").is_some() {
                expected.extend(["400", "413", "415"]);
            }
            for status in expected {
                assert!(
                    responses.contains_key(status),
                    "{method} {path}: no {status}"
                );
            }
            for (status, response) in responses {
                if status.as_str() < "400" {
                    continue;
                }
                let content = response["content"].as_object().unwrap();
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    ["application/problem+json"],
                    "{method} {path} {status}"
                );
                assert_eq!(
                    content["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem"
                );
            }
        }
    }

    #[test]
    fn path_parameters_are_in_the_path_and_the_rest_in_the_query_or_headers() {
        for (method, path, operation) in operations() {
            let Some(parameters) = operation["parameters"].as_array() else {
                continue;
            };
            for parameter in parameters {
                let name = parameter["name"].as_str().unwrap();
                let placed = parameter["in"].as_str().unwrap();
                let templated = path.contains(&format!("{{{name}}}"));
                assert_eq!(
                    placed == "path",
                    templated,
                    "{method} {path}: {name} in {placed}"
                );
            }
        }
    }
}
