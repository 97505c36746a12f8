//! What several of the bank's test files share.

use bank_generated::grpc::GrpcClient;
use bank_generated::{AccountType, BankApi};

/// A gRPC client of the node at `api` (resending on transport failures) and a new checking
/// account of a new customer.
pub async fn client_with_account(api: &str) -> (GrpcClient, u64) {
    let client = GrpcClient::connect(api)
        .await
        .expect("connect")
        .retrying(10);
    let customer = client
        .create_customer("Test".into(), "Customer".into(), "1 Test Lane".into())
        .await
        .expect("customer");
    let account = client
        .create_account(customer.customer_id, AccountType::Checking)
        .await
        .expect("account")
        .account_id;
    (client, account)
}
