//! A listener's route table together with the list of what it serves. Routes are added through [`Routes`] only,
//! so the list the REST API's description (`docs/openapi.yaml`) is checked against is the table itself.

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::handler::Handler;
use axum::http::Method;
use axum::http::request::Parts;
use axum::routing::{self, MethodRouter};

use crate::api::ApiError;

/// One route a listener serves: a method and a path template in the router's syntax (`/v2/models/{model}`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
}

/// A route table under construction, and the routes it holds.
pub(super) struct Routes<S> {
    router: Router<S>,
    served: Vec<Route>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub(super) fn new() -> Self {
        Routes { router: Router::new(), served: Vec::new() }
    }

    pub(super) fn get<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add(Method::GET, path, routing::get(handler))
    }

    pub(super) fn post<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add(Method::POST, path, routing::post(handler))
    }

    pub(super) fn put<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add(Method::PUT, path, routing::put(handler))
    }

    pub(super) fn delete<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
        self.add(Method::DELETE, path, routing::delete(handler))
    }

    /// Methods of one path added one at a time are merged by the router into one entry.
    fn add(mut self, method: Method, path: &'static str, handler: MethodRouter<S>) -> Self {
        self.served.push(Route { method, path });
        self.router = self.router.route(path, handler);
        self
    }

    pub(super) fn router(self) -> Router<S> {
        self.router
    }

    pub(super) fn served(self) -> Vec<Route> {
        self.served
    }
}

/// A route's path parameters; one that cannot be decoded (not UTF-8, say) is refused as a 400 with a JSON body,
/// like every other error, where axum's own extractor would answer in plain text.
pub(super) struct PathParam<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParam(value)),
            Err(e) => Err(ApiError::malformed(format!("invalid path: {}", e.body_text()))),
        }
    }
}
