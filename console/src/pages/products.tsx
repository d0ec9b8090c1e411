import type { Product } from "@licensd/client/gen/licensd/licensing/v1/product_pb.js";
import { useState } from "preact/hooks";
import { go, href } from "../router";
import {
  Empty,
  ErrorBox,
  Field,
  Loading,
  Page,
  Pager,
  Table,
  useAction,
  useAsync,
  usePages,
  useScope,
  when,
} from "../ui";
import {
  DeleteButton,
  FeatureEditor,
  type FeatureRow,
  featureRows,
  featuresOf,
  kindName,
  MetadataEditor,
  MetadataList,
  type MetadataRow,
  metadataOf,
  metadataRows,
  same,
} from "./catalog-editors";

/** Products: what a vendor licenses, with the features its plans may entitle. */
export function Products({ params }: { params: string[] }) {
  return params[0] ? <ProductDetail id={params[0]} /> : <ProductList />;
}

function ProductList() {
  const { client, tenantId } = useScope();
  const [creating, setCreating] = useState(false);
  const list = usePages(
    async (pageToken) => {
      const r = await client.licensing.listProducts({ tenantId, pageToken });
      return { items: r.products, next: r.nextPageToken };
    },
    [tenantId],
  );
  return (
    <Page
      title="Products"
      actions={
        creating ? null : (
          <button type="button" class="primary" onClick={() => setCreating(true)}>
            New product
          </button>
        )
      }
    >
      {creating ? (
        <ProductForm
          onCancel={() => setCreating(false)}
          onSaved={() => {
            setCreating(false);
            list.reload();
          }}
        />
      ) : null}
      <ErrorBox error={list.error} />
      {list.loading && !list.data ? (
        <Loading />
      ) : list.items.length === 0 && !list.error ? (
        <Empty>
          <p>No products yet — create one to define features and plans.</p>
        </Empty>
      ) : (
        <Table<Product>
          label="Products"
          rows={list.items}
          columns={[
            { title: "Code", cell: (p) => <code>{p.code}</code> },
            { title: "Name", cell: (p) => <a href={href("products", p.id)}>{p.name}</a> },
            { title: "Features", cell: (p) => p.features.map((f) => f.name).join(", ") || "—" },
            { title: "Created", cell: (p) => when(p.createTime) },
          ]}
        />
      )}
      <Pager {...list} />
    </Page>
  );
}

function ProductDetail({ id }: { id: string }) {
  const { client, tenantId } = useScope();
  const product = useAsync(async () => (await client.licensing.getProduct({ tenantId, id })).product, [tenantId, id]);
  const [editing, setEditing] = useState(false);
  const p = product.data;
  return (
    <Page title={p ? `Product ${p.name}` : "Product"} actions={<a href={href("products")}>← All products</a>}>
      <ErrorBox error={product.error} />
      {product.loading && !p ? <Loading /> : null}
      {p ? (
        <>
          <dl class="facts">
            <dt>Id</dt>
            <dd>
              <code>{p.id}</code>
            </dd>
            <dt>Code</dt>
            <dd>
              <code>{p.code}</code>
            </dd>
            <dt>Features</dt>
            <dd>
              {p.features.length === 0 ? (
                <span class="muted">none — edit the product to add some</span>
              ) : (
                <ul class="plain">
                  {p.features.map((f) => (
                    <li key={f.name}>
                      <code>{f.name}</code> ({kindName(f.kind)}){f.description ? ` — ${f.description}` : ""}
                    </li>
                  ))}
                </ul>
              )}
            </dd>
            <dt>Metadata</dt>
            <dd>
              <MetadataList metadata={p.metadata} />
            </dd>
            <dt>Updated</dt>
            <dd>{when(p.updateTime)}</dd>
          </dl>
          <ProductPolicies productId={p.id} />
          {editing ? (
            <ProductForm
              product={p}
              onCancel={() => setEditing(false)}
              onSaved={() => {
                setEditing(false);
                product.reload();
              }}
            />
          ) : (
            <div>
              <button type="button" class="primary" onClick={() => setEditing(true)}>
                Edit product
              </button>{" "}
              <DeleteButton
                what={`product ${p.code}`}
                onDelete={async () => {
                  await client.licensing.deleteProduct({ tenantId, id: p.id });
                  go("products");
                }}
              />
            </div>
          )}
        </>
      ) : null}
    </Page>
  );
}

/** The product's plans, linked; policies are created on the Policies page. */
function ProductPolicies({ productId }: { productId: string }) {
  const { client, tenantId } = useScope();
  const policies = useAsync(
    async () => (await client.licensing.listPolicies({ tenantId, productId, pageSize: 1000 })).policies,
    [tenantId, productId],
  );
  return (
    <section aria-labelledby="product-policies">
      <h2 id="product-policies">Policies</h2>
      <ErrorBox error={policies.error} />
      {policies.data?.length ? (
        <ul>
          {policies.data.map((pol) => (
            <li key={pol.id}>
              <a href={href("policies", pol.id)}>{pol.name}</a>
            </li>
          ))}
        </ul>
      ) : policies.data ? (
        <p class="muted">
          No policies for this product yet — <a href={href("policies")}>create one on the Policies page</a> to set what
          its licenses entitle.
        </p>
      ) : null}
    </section>
  );
}

/** Creates a product, or edits one: only the fields changed go in the update mask. */
function ProductForm({ product, onSaved, onCancel }: { product?: Product; onSaved: () => void; onCancel: () => void }) {
  const { client, tenantId } = useScope();
  const [code, setCode] = useState("");
  const [name, setName] = useState(product?.name ?? "");
  const [features, setFeatures] = useState<FeatureRow[]>(() => featureRows(product?.features ?? []));
  const [metadata, setMetadata] = useState<MetadataRow[]>(() => metadataRows(product?.metadata ?? {}));
  const action = useAction();
  const idp = product ? "edit-product" : "new-product";
  return (
    <form
      class="catalog"
      aria-label={product ? "Edit product" : "New product"}
      onSubmit={async (e) => {
        e.preventDefault();
        const done = await action.run(async () => {
          if (!product) {
            return client.licensing.createProduct({
              tenantId,
              code: code.trim(),
              name: name.trim(),
              features: featuresOf(features),
              metadata: metadataOf(metadata),
            });
          }
          const paths: string[] = [];
          if (name.trim() !== product.name) paths.push("name");
          if (!same(featuresOf(features), featuresOf(featureRows(product.features)))) paths.push("features");
          if (!same(metadataOf(metadata), product.metadata)) paths.push("metadata");
          if (paths.length === 0) return true;
          return client.licensing.updateProduct({
            tenantId,
            id: product.id,
            name: name.trim(),
            features: featuresOf(features),
            metadata: metadataOf(metadata),
            updateMask: { paths },
          });
        });
        if (done) onSaved();
      }}
    >
      <h2>{product ? "Edit product" : "New product"}</h2>
      <div class="grid">
        {product ? null : (
          <Field
            id={`${idp}-code`}
            label="Code"
            hint="Three characters A–Z, 0–9: the first segment of its license keys."
          >
            <input
              id={`${idp}-code`}
              required
              autocomplete="off"
              aria-describedby={`${idp}-code-hint`}
              value={code}
              onInput={(e) => setCode(e.currentTarget.value)}
            />
          </Field>
        )}
        <Field id={`${idp}-name`} label="Product name">
          <input id={`${idp}-name`} required value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </Field>
      </div>
      <FeatureEditor rows={features} onChange={setFeatures} idPrefix={idp} />
      <MetadataEditor rows={metadata} onChange={setMetadata} idPrefix={idp} />
      <ErrorBox error={action.error} />
      <div class="actions">
        <button type="submit" disabled={action.busy}>
          {product ? "Save product" : "Create product"}
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}
