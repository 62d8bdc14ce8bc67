//! ACL administration: add and remove bindings (to the controller leader, through the
//! admin path of [`super::admin`]) and list them (from any live broker's view).

use std::time::Instant;

use super::{Client, ClientError, Payload, check, name_silence};
use crate::api::{AclBinding, AclRequest, Api, ListAclsRequest, ListAclsResponse};

impl Client {
    /// Adds an ACL binding; the server's answer says what it did (a binding that exists
    /// already is no error).
    pub async fn add_acl(&self, binding: AclBinding) -> Result<String, ClientError> {
        self.admin_said(Api::CreateAcl, &AclRequest { binding })
            .await
    }

    /// Removes the ACL binding equal to `binding`; one that does not exist is
    /// `Server { code: InvalidRequest }` (unless a lost answer of an earlier attempt
    /// removed it).
    pub async fn remove_acl(&self, binding: AclBinding) -> Result<String, ClientError> {
        self.admin_said(Api::DeleteAcl, &AclRequest { binding })
            .await
    }

    /// The ACL bindings (of user `principal` only, if given), as the first broker that
    /// answers sees them.
    pub async fn list_acls(&self, principal: Option<&str>) -> Result<Vec<AclBinding>, ClientError> {
        let request = ListAclsRequest {
            principal: principal.map(str::to_owned),
        };
        let timeout = self.admin_attempt_timeout();
        let candidates = self.inner.cache.borrow_mut().candidates(
            &self.inner.bootstrap,
            true,
            None,
            Instant::now(),
        );
        let mut last = ClientError::NoBroker("no broker known".into());
        for addr in candidates {
            let call = self.call::<_, ListAclsResponse>(
                &addr,
                Api::ListAcls,
                &request,
                Payload::default(),
                timeout,
            );
            match call.await {
                Ok((response, _)) => {
                    check(response.error, "")?;
                    return Ok(response.bindings);
                }
                Err(e) => last = name_silence(e, &addr, timeout),
            }
        }
        Err(last)
    }
}
