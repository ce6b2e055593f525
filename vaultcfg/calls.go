package vaultcfg

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/hashicorp/vault/api"
)

// The calls below wrap the API client: each is bounded by the configured timeout, retried once after an
// AppRole re-login when the token had expired (see do), and returns classified single-line errors. Unlike
// api.Logical's Read and List, a 404 that names a missing route is an error (ErrMountNotFound), not "no data".

// checkRetry retries requests that got no answer or a gateway error; never a Vault error answer (a failed
// Transit decryption is HTTP 500 and must not be repeated; a sealed Vault answers 503 and will stay sealed).
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		return true, nil
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusGatewayTimeout:
		return true, nil
	}
	return false, nil
}

// read GETs path; nil, nil when there is nothing there (404 without error messages).
func (c *client) read(ctx context.Context, path string) (*api.Secret, error) {
	return c.readQuery(ctx, "read", path, nil)
}

// list LISTs path (as GET with list=true); nil, nil when there is nothing there.
func (c *client) list(ctx context.Context, path string) (*api.Secret, error) {
	return c.readQuery(ctx, "list", path, map[string][]string{"list": {"true"}})
}

func (c *client) readQuery(ctx context.Context, op, path string, query map[string][]string) (*api.Secret, error) {
	var sec *api.Secret
	err := c.do(ctx, func() error {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
		resp, err := c.api.Logical().ReadRawWithDataWithContext(ctx, path, query)
		if resp != nil {
			defer resp.Body.Close()
		}
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound && len(re.Errors) == 0 {
			sec = nil
			return nil
		}
		if err != nil {
			return c.classify(err, op, path)
		}
		sec, err = api.ParseSecret(resp.Body)
		if err != nil {
			return c.classify(errors.New("answer does not parse"), op, path)
		}
		return nil
	})
	return sec, err
}

// write POSTs body to path.
func (c *client) write(ctx context.Context, op, path string, body map[string]any) (*api.Secret, error) {
	var sec *api.Secret
	err := c.do(ctx, func() error {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
		var err error
		sec, err = c.api.Logical().WriteWithContext(ctx, path, body)
		return c.classify(err, op, path)
	})
	return sec, err
}

// writeKeepBody POSTs body to path and returns the parsed answer even when Vault reports an error status with a
// JSON body (Transit batch decryption answers 500 with per-item results when any item failed); err is then
// the classified status error. Its failures are not counted (Config.Metrics): the caller knows whether an error
// status with results was a failure of the call.
func (c *client) writeKeepBody(ctx context.Context, op, path string, body map[string]any) (*api.Secret, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	var sec *api.Secret
	err = c.doUncounted(ctx, func() error {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
		sec = nil
		resp, err := c.api.Logical().WriteRawWithContext(ctx, path, b)
		if resp != nil {
			defer resp.Body.Close()
			if s, perr := api.ParseSecret(resp.Body); perr == nil {
				sec = s
			}
		}
		return c.classify(err, op, path)
	})
	return sec, err
}

// del DELETEs path.
func (c *client) del(ctx context.Context, path string) error {
	return c.do(ctx, func() error {
		ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
		_, err := c.api.Logical().DeleteWithContext(ctx, path)
		return c.classify(err, "delete", path)
	})
}
