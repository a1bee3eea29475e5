//! The shop's resources: one view model per response, whose actions are worked out from the
//! cart's state here on the server, rendered as HTML or JSON.

use std::sync::Arc;

use eventjournal::journal::{Host, Journal};
use eventjournal::{Error, Store};
use serde_json::{json, Value};

use crate::domain::{product, Cart, CartEvent, Stock, StockEvent, CATALOGUE, MAX_QUANTITY};
use crate::http::{esc, negotiate, parse_form, Media, Request, Response};

/// The carts and the stock of the limited products, each a host of journaled actors.
pub struct Shop {
    pub carts: Host<Cart>,
    pub stock: Host<Stock>,
}

impl Shop {
    pub fn new(store: Arc<Store>) -> Shop {
        Shop {
            carts: Host::new(store.clone(), Arc::new(Journal::<Cart>::new()), 10_000),
            stock: Host::new(
                store,
                Arc::new(Journal::<Stock>::new().snapshot_every(200)),
                16,
            ),
        }
    }
}

/// Why a request was not carried out.
#[derive(Debug)]
pub enum Failure {
    /// Malformed input (400).
    Bad(String),
    NotFound(String),
    /// The method is not one of these (405).
    Method(&'static str),
    /// Not allowed in the cart's current state, or rendered from an older version (409).
    Conflict {
        message: String,
        cart: String,
    },
    Store(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Store(e)
    }
}

/// A form field of an action.
pub struct Field {
    pub name: &'static str,
    /// `hidden` or `number`.
    pub kind: &'static str,
    pub value: String,
    pub min: Option<u32>,
    pub max: Option<u32>,
}

impl Field {
    fn hidden(name: &'static str, value: impl ToString) -> Field {
        Field {
            name,
            kind: "hidden",
            value: value.to_string(),
            min: None,
            max: None,
        }
    }
}

/// Something the client may do next: a link (GET, no fields) or a form.
pub struct Action {
    pub rel: &'static str,
    pub title: String,
    pub method: &'static str,
    pub href: String,
    /// The product it concerns, if any.
    pub item: Option<&'static str>,
    pub fields: Vec<Field>,
}

pub struct LineView {
    pub sku: &'static str,
    pub name: &'static str,
    pub unit_cents: u64,
    pub quantity: u32,
}

pub struct CartView {
    pub id: String,
    pub version: u64,
    pub lines: Vec<LineView>,
    pub total_cents: u64,
    pub receipt: Option<u64>,
    /// Units left of each limited product, as the stock actor saw it when rendering.
    pub left: Vec<(&'static str, u32)>,
}

pub enum Body {
    Home,
    Cart(CartView),
    Problem(String),
}

pub struct View {
    pub status: u16,
    pub title: String,
    pub body: Body,
    pub actions: Vec<Action>,
    pub location: Option<String>,
    /// For a 405: the methods the resource takes.
    pub allow: Option<&'static str>,
}

fn cart_href(id: &str) -> String {
    format!("/carts/{id}")
}

/// Cart ids are the 32 hex digits of a random UUID; anything else names no cart.
fn valid_cart_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

pub fn handle(shop: &Shop, req: &Request) -> Response {
    let media = match negotiate(req.accept.as_deref()) {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Response::text(
                406,
                "this resource is available as text/html and application/json only",
            )
        }
        Err(message) => return Response::text(400, &message),
    };
    let view = route(shop, req).unwrap_or_else(problem);
    render(&view, media, req.method == "POST")
}

fn problem(f: Failure) -> View {
    let mut allow = None;
    let (status, message, back) = match f {
        Failure::Bad(m) => (400, m, None),
        Failure::Method(methods) => {
            allow = Some(methods);
            (405, format!("use {methods} here"), None)
        }
        Failure::NotFound(m) => (404, m, None),
        Failure::Conflict { message, cart } => (409, message, Some(cart)),
        Failure::Store(e) => {
            // Not the client's fault, and not a secret: the store's own words.
            let status = match e {
                Error::Draining | Error::HandedOver { .. } | Error::Closed => 503,
                _ => 500,
            };
            (status, e.to_string(), None)
        }
    };
    let mut actions = vec![Action {
        rel: "home",
        title: "Home".into(),
        method: "GET",
        href: "/".into(),
        item: None,
        fields: Vec::new(),
    }];
    if let Some(id) = back {
        actions.push(Action {
            rel: "cart",
            title: "Back to the cart".into(),
            method: "GET",
            href: cart_href(&id),
            item: None,
            fields: Vec::new(),
        });
    }
    View {
        status,
        title: format!("{status}"),
        body: Body::Problem(message),
        actions,
        location: None,
        allow,
    }
}

fn route(shop: &Shop, req: &Request) -> Result<View, Failure> {
    let path = req.path.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let allow = |methods: &'static str| -> Result<(), Failure> {
        if methods.split(", ").any(|m| m == req.method) {
            Ok(())
        } else {
            Err(Failure::Method(methods))
        }
    };
    match segments.as_slice() {
        [""] => {
            allow("GET")?;
            Ok(home())
        }
        ["carts"] => {
            allow("POST")?;
            form(req)?;
            create_cart(shop)
        }
        ["carts", id, rest @ ..] => {
            if !valid_cart_id(id) {
                return Err(Failure::NotFound(format!("there is no cart `{id}`")));
            }
            match rest {
                [] => {
                    allow("GET")?;
                    show_cart(shop, id, 200)
                }
                ["items"] => {
                    allow("POST")?;
                    let f = form(req)?;
                    let sku = known_sku(field(&f, "sku")?)?;
                    act(
                        shop,
                        id,
                        version(&f)?,
                        CartEvent::ItemAdded {
                            sku: sku.into(),
                            quantity: 1,
                        },
                    )
                }
                ["items", sku, "quantity"] => {
                    allow("POST")?;
                    let f = form(req)?;
                    let sku = known_sku(sku)?;
                    let raw = field(&f, "quantity")?;
                    let quantity = raw
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|q| (1..=MAX_QUANTITY).contains(q))
                        .ok_or_else(|| {
                            Failure::Bad(format!(
                                "quantity `{raw}` is not a whole number from 1 to {MAX_QUANTITY}"
                            ))
                        })?;
                    act(
                        shop,
                        id,
                        version(&f)?,
                        CartEvent::QuantityChanged {
                            sku: sku.into(),
                            quantity,
                        },
                    )
                }
                ["items", sku, "remove"] => {
                    allow("POST")?;
                    let f = form(req)?;
                    let sku = known_sku(sku)?;
                    act(
                        shop,
                        id,
                        version(&f)?,
                        CartEvent::ItemRemoved { sku: sku.into() },
                    )
                }
                ["checkout"] => {
                    allow("POST")?;
                    let f = form(req)?;
                    checkout(shop, id, version(&f)?)
                }
                _ => Err(Failure::NotFound(format!("there is nothing at `{path}`"))),
            }
        }
        _ => Err(Failure::NotFound(format!("there is nothing at `{path}`"))),
    }
}

fn form(req: &Request) -> Result<Vec<(String, String)>, Failure> {
    let ct = req.content_type.as_deref().unwrap_or_default();
    let ct = ct.split(';').next().unwrap_or_default().trim();
    if !req.body.is_empty() && !ct.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(Failure::Bad(format!(
            "the body's Content-Type is `{ct}`; actions take application/x-www-form-urlencoded"
        )));
    }
    parse_form(&req.body).map_err(Failure::Bad)
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Result<&'a str, Failure> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| Failure::Bad(format!("the form has no `{name}` field")))
}

fn version(form: &[(String, String)]) -> Result<u64, Failure> {
    let raw = field(form, "version")?;
    raw.parse()
        .map_err(|_| Failure::Bad(format!("version `{raw}` is not a whole number")))
}

fn known_sku(sku: &str) -> Result<&'static str, Failure> {
    product(sku)
        .map(|p| p.sku)
        .ok_or_else(|| Failure::Bad(format!("there is no product `{sku}`")))
}

fn home() -> View {
    View {
        status: 200,
        title: "The tea shop".into(),
        body: Body::Home,
        actions: vec![Action {
            rel: "create-cart",
            title: "Start a cart".into(),
            method: "POST",
            href: "/carts".into(),
            item: None,
            fields: Vec::new(),
        }],
        location: None,
        allow: None,
    }
}

fn create_cart(shop: &Shop) -> Result<View, Failure> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    shop.carts.call(&id, |c| -> Result<(), Failure> {
        c.raise_event(CartEvent::Opened)?;
        Ok(c.confirm_events()?)
    })?;
    let mut view = show_cart(shop, &id, 201)?;
    view.location = Some(cart_href(&id));
    Ok(view)
}

/// Carries out one cart event, if the form was rendered from the cart's current version: the
/// check and the event happen in one call to the cart's actor, so two requests rendered from
/// the same version cannot both apply.
fn act(shop: &Shop, id: &str, seen: u64, event: CartEvent) -> Result<View, Failure> {
    shop.carts.call(id, |c| -> Result<(), Failure> {
        current(c.state(), c.version(), id, seen)?;
        if let CartEvent::ItemAdded { sku, .. } = &event {
            // Advisory: the stock actor decides at checkout. This only keeps the offer honest.
            if let Some(p) = product(sku).filter(|p| p.stock.is_some()) {
                let left = units_left(shop, p.sku)?;
                if left <= c.state().quantity_of(sku) {
                    return Err(conflict(id, format!("{} is sold out", p.name)));
                }
            }
        }
        c.raise_event(event).map_err(|e| refused(id, e))?;
        Ok(c.confirm_events()?)
    })?;
    let mut view = show_cart(shop, id, 200)?;
    view.location = Some(cart_href(id));
    Ok(view)
}

fn conflict(id: &str, message: String) -> Failure {
    Failure::Conflict {
        message,
        cart: id.to_string(),
    }
}

/// A refusal by the cart's rules is the client's conflict with the state; other errors are the
/// store's.
fn refused(id: &str, e: Error) -> Failure {
    match e {
        Error::Apply { source, .. } => conflict(id, source.to_string()),
        e => Failure::Store(e),
    }
}

fn current(cart: &Cart, version: u64, id: &str, seen: u64) -> Result<(), Failure> {
    if !cart.opened {
        return Err(Failure::NotFound(format!("there is no cart `{id}`")));
    }
    if seen != version {
        return Err(conflict(
            id,
            format!(
                "the cart changed since this form was rendered (version {seen}, now {version}): \
                 nothing was done; look at the cart again"
            ),
        ));
    }
    Ok(())
}

fn units_left(shop: &Shop, sku: &str) -> Result<u32, Failure> {
    let p = product(sku).ok_or_else(|| Failure::Bad(format!("there is no product `{sku}`")))?;
    shop.stock
        .call(sku, |s| -> Result<u32, Failure> { Ok(s.state().left(p)) })
}

/// Checks a cart out. Stock is exact because each limited product's stock actor is the only
/// writer of its sales: it records this cart's units (refusing if too few are left) before the
/// cart raises `CheckedOut`. Recording sets the cart's figure rather than adding to it, so a
/// checkout retried after a crash between the two steps finds its sale and completes.
fn checkout(shop: &Shop, id: &str, seen: u64) -> Result<View, Failure> {
    shop.carts.call(id, |c| -> Result<(), Failure> {
        current(c.state(), c.version(), id, seen)?;
        let cart = c.state().clone();
        if cart.checked_out.is_some() {
            return Err(conflict(id, "the cart is checked out".into()));
        }
        if cart.lines.is_empty() {
            return Err(conflict(id, "an empty cart cannot be checked out".into()));
        }
        // Previous figures, to put back if a later product is short.
        let mut recorded: Vec<(&str, u32)> = Vec::new();
        for p in CATALOGUE.iter().filter(|p| p.stock.is_some()) {
            let wanted = cart.quantity_of(p.sku);
            let outcome = shop.stock.call(p.sku, |s| -> Result<Option<u32>, Failure> {
                let before = s.state().sold_to(id);
                if before == wanted {
                    return Ok(None);
                }
                s.raise_event(StockEvent::Sold {
                    sku: p.sku.into(),
                    cart: id.into(),
                    quantity: wanted,
                })
                .map_err(|e| match refused(id, e) {
                    Failure::Conflict { message, cart } => Failure::Conflict {
                        message: format!(
                            "{}: {message}; change the cart and check out again",
                            p.name
                        ),
                        cart,
                    },
                    other => other,
                })?;
                s.confirm_events()?;
                Ok(Some(before))
            });
            match outcome {
                Ok(Some(before)) => recorded.push((p.sku, before)),
                Ok(None) => {}
                Err(f) => {
                    for (sku, before) in recorded {
                        let _ = shop.stock.call(sku, |s| -> Result<(), Failure> {
                            s.raise_event(StockEvent::Sold {
                                sku: sku.into(),
                                cart: id.into(),
                                quantity: before,
                            })?;
                            Ok(s.confirm_events()?)
                        });
                    }
                    return Err(f);
                }
            }
        }
        if std::env::var_os("CARTS_CRASH_AFTER_SALE").is_some() {
            // For the test of a crash between the two steps of a checkout.
            std::process::abort();
        }
        c.raise_event(CartEvent::CheckedOut {
            total_cents: cart.total_cents(),
        })
        .map_err(|e| refused(id, e))?;
        Ok(c.confirm_events()?)
    })?;
    let mut view = show_cart(shop, id, 200)?;
    view.location = Some(cart_href(id));
    Ok(view)
}

fn show_cart(shop: &Shop, id: &str, status: u16) -> Result<View, Failure> {
    let (cart, version) = shop.carts.call(id, |c| -> Result<_, Failure> {
        Ok((c.state().clone(), c.version()))
    })?;
    if !cart.opened {
        return Err(Failure::NotFound(format!("there is no cart `{id}`")));
    }
    let mut left = Vec::new();
    if cart.checked_out.is_none() {
        for p in CATALOGUE.iter().filter(|p| p.stock.is_some()) {
            left.push((p.sku, units_left(shop, p.sku)?));
        }
    }
    let view = CartView {
        id: id.to_string(),
        version,
        lines: cart
            .lines
            .iter()
            .filter_map(|l| {
                product(&l.sku).map(|p| LineView {
                    sku: p.sku,
                    name: p.name,
                    unit_cents: p.cents,
                    quantity: l.quantity,
                })
            })
            .collect(),
        total_cents: cart.total_cents(),
        receipt: cart.checked_out,
        left,
    };
    let actions = actions_of(&cart, &view);
    Ok(View {
        status,
        title: if view.receipt.is_some() {
            "Receipt".into()
        } else {
            "Your cart".into()
        },
        body: Body::Cart(view),
        actions,
        location: None,
        allow: None,
    })
}

/// What the cart's state allows, and nothing else: the page shows exactly these.
fn actions_of(cart: &Cart, view: &CartView) -> Vec<Action> {
    let mut actions = vec![Action {
        rel: "home",
        title: "Home".into(),
        method: "GET",
        href: "/".into(),
        item: None,
        fields: Vec::new(),
    }];
    if cart.checked_out.is_some() {
        return actions;
    }
    let id = &view.id;
    let version = || Field::hidden("version", view.version);
    for p in CATALOGUE {
        let have = cart.quantity_of(p.sku);
        let left = view
            .left
            .iter()
            .find(|(sku, _)| *sku == p.sku)
            .map(|(_, n)| *n);
        let addable =
            !(p.once_per_cart && have > 0) && have < MAX_QUANTITY && left.is_none_or(|n| n > have);
        if addable {
            actions.push(Action {
                rel: "add",
                title: format!("Add {}", p.name),
                method: "POST",
                href: format!("/carts/{id}/items"),
                item: Some(p.sku),
                fields: vec![Field::hidden("sku", p.sku), version()],
            });
        }
        if have > 0 {
            if !p.once_per_cart {
                actions.push(Action {
                    rel: "change-quantity",
                    title: format!("Change the quantity of {}", p.name),
                    method: "POST",
                    href: format!("/carts/{id}/items/{}/quantity", p.sku),
                    item: Some(p.sku),
                    fields: vec![
                        Field {
                            name: "quantity",
                            kind: "number",
                            value: have.to_string(),
                            min: Some(1),
                            max: Some(MAX_QUANTITY),
                        },
                        version(),
                    ],
                });
            }
            actions.push(Action {
                rel: "remove",
                title: format!("Remove {}", p.name),
                method: "POST",
                href: format!("/carts/{id}/items/{}/remove", p.sku),
                item: Some(p.sku),
                fields: vec![version()],
            });
        }
    }
    if !cart.lines.is_empty() {
        actions.push(Action {
            rel: "checkout",
            title: "Check out".into(),
            method: "POST",
            href: format!("/carts/{id}/checkout"),
            item: None,
            fields: vec![version()],
        });
    }
    actions
}

fn money(cents: u64) -> String {
    format!("€{}.{:02}", cents / 100, cents % 100)
}

fn render(view: &View, media: Media, was_post: bool) -> Response {
    let mut headers = Vec::new();
    let mut status = view.status;
    if let Some(loc) = &view.location {
        headers.push(("Location", loc.clone()));
    }
    if let Some(methods) = view.allow {
        headers.push(("Allow", methods.to_string()));
    }
    let (content_type, body) = match media {
        Media::Json => (
            "application/json",
            serde_json::to_vec_pretty(&to_json(view)).unwrap_or_default(),
        ),
        Media::Html => {
            // Post, redirect, get: a reload of the page never repeats the action.
            if was_post && view.location.is_some() && status < 300 {
                status = 303;
            }
            ("text/html; charset=utf-8", to_html(view).into_bytes())
        }
    };
    Response {
        status,
        content_type,
        headers,
        body,
    }
}

fn action_json(a: &Action) -> Value {
    let fields: Vec<Value> = a
        .fields
        .iter()
        .map(|f| {
            let mut v = json!({"name": f.name, "type": f.kind, "value": f.value});
            if let Some(min) = f.min {
                v["min"] = json!(min);
            }
            if let Some(max) = f.max {
                v["max"] = json!(max);
            }
            v
        })
        .collect();
    let mut v = json!({
        "rel": a.rel,
        "title": a.title,
        "method": a.method,
        "href": a.href,
    });
    if let Some(item) = a.item {
        v["item"] = json!(item);
    }
    if a.method != "GET" {
        v["encoding"] = json!("application/x-www-form-urlencoded");
        v["fields"] = Value::Array(fields);
    }
    v
}

fn to_json(view: &View) -> Value {
    let mut v = json!({
        "title": view.title,
        "actions": view.actions.iter().map(action_json).collect::<Vec<_>>(),
    });
    match &view.body {
        Body::Home => {}
        Body::Problem(message) => v["error"] = json!({"status": view.status, "message": message}),
        Body::Cart(c) => {
            v["cart"] = json!({
                "id": c.id,
                "version": c.version,
                "lines": c.lines.iter().map(|l| json!({
                    "sku": l.sku,
                    "name": l.name,
                    "unit_cents": l.unit_cents,
                    "quantity": l.quantity,
                })).collect::<Vec<_>>(),
                "total_cents": c.total_cents,
                "checked_out": c.receipt.is_some(),
                "left": c.left.iter().map(|(sku, n)| json!({"sku": sku, "units": n})).collect::<Vec<_>>(),
            });
            if let Some(total) = c.receipt {
                v["receipt"] = json!({"total_cents": total});
            }
        }
    }
    v
}

fn form_html(a: &Action, label: &str) -> String {
    let mut s = format!(
        "<form method=\"post\" action=\"{}\" data-rel=\"{}\" data-item=\"{}\">",
        esc(&a.href),
        esc(a.rel),
        esc(a.item.unwrap_or_default())
    );
    for f in &a.fields {
        if f.kind == "number" {
            s.push_str(&format!(
                "<input type=\"number\" name=\"{}\" value=\"{}\" min=\"{}\" max=\"{}\" \
                 aria-label=\"{}\">",
                esc(f.name),
                esc(&f.value),
                f.min.unwrap_or(1),
                f.max.unwrap_or(MAX_QUANTITY),
                esc(&a.title)
            ));
        } else {
            s.push_str(&format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                esc(f.name),
                esc(&f.value)
            ));
        }
    }
    s.push_str(&format!(
        "<button type=\"submit\" title=\"{}\">{}</button></form>",
        esc(&a.title),
        esc(label)
    ));
    s
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;\
padding:0 1rem;color:#222}table{border-collapse:collapse;width:100%}td,th{padding:.4rem;\
border-bottom:1px solid #ddd;text-align:left}form{display:inline-block;margin:0 .2rem}\
input[type=number]{width:4rem}button{cursor:pointer}.problem{color:#a00}.note{color:#666}";

fn to_html(view: &View) -> String {
    let mut main = String::new();
    let find = |rel: &str, item: Option<&str>| {
        view.actions
            .iter()
            .find(move |a| a.rel == rel && a.item == item)
    };
    let data_version;
    match &view.body {
        Body::Home => {
            data_version = String::new();
            main.push_str(
                "<p>Loose-leaf tea and things to drink it from. Every cart is a journaled actor \
                 in an eventjournal store.</p>",
            );
            if let Some(a) = find("create-cart", None) {
                main.push_str(&form_html(a, &a.title));
            }
        }
        Body::Problem(message) => {
            data_version = String::new();
            main.push_str(&format!(
                "<p class=\"problem\" id=\"problem\">{}</p>",
                esc(message)
            ));
        }
        Body::Cart(c) => {
            data_version = format!(
                " data-cart=\"{}\" data-version=\"{}\" data-checked-out=\"{}\"",
                esc(&c.id),
                c.version,
                c.receipt.is_some()
            );
            if let Some(total) = c.receipt {
                main.push_str(&format!(
                    "<p id=\"receipt\">Thank you. Paid {} for:</p>",
                    esc(&money(total))
                ));
            }
            if c.lines.is_empty() {
                main.push_str("<p id=\"empty\">The cart is empty.</p>");
            } else {
                main.push_str(
                    "<table><thead><tr><th>Product</th><th>Unit</th><th>Quantity</th><th></th>\
                     </tr></thead><tbody>",
                );
                for l in &c.lines {
                    let qty = match find("change-quantity", Some(l.sku)) {
                        Some(a) => form_html(a, "Update"),
                        None => l.quantity.to_string(),
                    };
                    let remove = find("remove", Some(l.sku))
                        .map(|a| form_html(a, "Remove"))
                        .unwrap_or_default();
                    main.push_str(&format!(
                        "<tr data-line=\"{}\"><td>{}</td><td>{}</td><td class=\"qty\" \
                         data-quantity=\"{}\">{}</td><td>{}</td></tr>",
                        esc(l.sku),
                        esc(l.name),
                        esc(&money(l.unit_cents)),
                        l.quantity,
                        qty,
                        remove
                    ));
                }
                main.push_str(&format!(
                    "</tbody></table><p>Total: <strong id=\"total\">{}</strong></p>",
                    esc(&money(c.total_cents))
                ));
            }
            let adds: Vec<&Action> = view.actions.iter().filter(|a| a.rel == "add").collect();
            if !adds.is_empty() {
                main.push_str("<h2>Add to the cart</h2><ul>");
                for a in adds {
                    let p = a.item.and_then(product);
                    let note = match (p, c.left.iter().find(|(s, _)| Some(*s) == a.item)) {
                        (_, Some((_, n))) => format!(" <span class=\"note\">{n} left</span>"),
                        (Some(p), None) if p.once_per_cart => {
                            " <span class=\"note\">one per cart</span>".to_string()
                        }
                        _ => String::new(),
                    };
                    main.push_str(&format!(
                        "<li>{} — {}{} {}</li>",
                        esc(p.map_or("", |p| p.name)),
                        esc(&money(p.map_or(0, |p| p.cents))),
                        note,
                        form_html(a, "Add")
                    ));
                }
                main.push_str("</ul>");
            }
            if let Some(a) = find("checkout", None) {
                main.push_str(&format!("<p>{}</p>", form_html(a, &a.title)));
            }
        }
    }
    let nav: String = view
        .actions
        .iter()
        .filter(|a| a.method == "GET")
        .map(|a| {
            format!(
                "<a href=\"{}\" rel=\"{}\">{}</a> ",
                esc(&a.href),
                esc(a.rel),
                esc(&a.title)
            )
        })
        .collect();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head>\
         <body><nav>{nav}</nav><main{data_version}><h1>{title}</h1>{main}</main></body></html>",
        title = esc(&view.title),
    )
}
