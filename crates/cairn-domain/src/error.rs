//! The error of a domain operation: one LINSTOR `ApiCallRc` error entry
//! with its cause and correction.

use cairn_api::ApiCallRc;

/// A refused operation. It carries the full reply entry so that the REST
/// layer only has to pick the HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", rc.message)]
pub struct OpError {
    /// Boxed: errors travel through every `Result` of the domain, which
    /// should stay small.
    pub rc: Box<ApiCallRc>,
}

impl OpError {
    /// An error entry `MASK_ERROR | op_obj | code`.
    pub fn new(op_obj: i64, code: i64, message: impl Into<String>) -> Self {
        OpError { rc: Box::new(ApiCallRc::error(op_obj, code, message)) }
    }

    pub fn cause(mut self, cause: impl Into<String>) -> Self {
        self.rc.cause = Some(cause.into());
        self
    }

    pub fn correction(mut self, correction: impl Into<String>) -> Self {
        self.rc.correction = Some(correction.into());
        self
    }

    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.rc.details = Some(details.into());
        self
    }

    pub fn obj_ref(mut self, key: &str, value: impl Into<String>) -> Self {
        self.rc.obj_refs.insert(key.to_string(), value.into());
        self
    }
}

impl From<OpError> for ApiCallRc {
    fn from(e: OpError) -> Self {
        *e.rc
    }
}

pub type OpResult<T> = Result<T, OpError>;
