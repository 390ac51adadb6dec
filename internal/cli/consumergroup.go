package cli

import (
	"fmt"
	"text/tabwriter"
	"time"
)

// ConsumerGroupCmd groups consumer group commands.
type ConsumerGroupCmd struct {
	Create ConsumerGroupCreateCmd `cmd:"" help:"Create a consumer group of the built-in endpoint (idempotent)."`
	List   ConsumerGroupListCmd   `cmd:"" help:"List consumer groups."`
	Show   ConsumerGroupShowCmd   `cmd:"" help:"Show a consumer group and its checkpoints as JSON."`
	Delete ConsumerGroupDeleteCmd `cmd:"" help:"Delete a consumer group and its checkpoints."`
}

// ConsumerGroupCreateCmd creates a group.
type ConsumerGroupCreateCmd struct {
	Name string `arg:"" help:"Group name: 1-50 letters, digits, '.', '-', '_'."`
}

// Run creates the group.
func (g *ConsumerGroupCreateCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	group, err := t.client.CreateConsumerGroup(env.ctx, g.Name)
	if err != nil {
		return fmt.Errorf("create consumer group %s: %w", g.Name, err)
	}
	fmt.Fprintln(env.Stdout, group.Name)
	return nil
}

// ConsumerGroupListCmd lists groups.
type ConsumerGroupListCmd struct {
	JSON bool `name:"json" help:"Print JSON."`
}

// Run lists the groups.
func (g *ConsumerGroupListCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	groups, err := t.client.ConsumerGroups(env.ctx)
	if err != nil {
		return fmt.Errorf("list consumer groups: %w", err)
	}
	if g.JSON {
		return printJSON(env, groups)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCREATED")
	for _, group := range groups {
		fmt.Fprintf(tw, "%s\t%s\n", group.Name, group.CreatedTime.Format(time.RFC3339))
	}
	return tw.Flush()
}

// ConsumerGroupShowCmd shows a group.
type ConsumerGroupShowCmd struct {
	Name string `arg:"" help:"Group name."`
}

// Run prints the group with its checkpoints.
func (g *ConsumerGroupShowCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	group, err := t.client.ConsumerGroup(env.ctx, g.Name)
	if err != nil {
		return fmt.Errorf("show consumer group %s: %w", g.Name, err)
	}
	return printJSON(env, group)
}

// ConsumerGroupDeleteCmd deletes a group.
type ConsumerGroupDeleteCmd struct {
	Name string `arg:"" help:"Group name."`
}

// Run deletes the group.
func (g *ConsumerGroupDeleteCmd) Run(env *Env, c *CLI) error {
	t, err := c.connect()
	if err != nil {
		return err
	}
	if err := t.client.DeleteConsumerGroup(env.ctx, g.Name); err != nil {
		return fmt.Errorf("delete consumer group %s: %w", g.Name, err)
	}
	return nil
}
